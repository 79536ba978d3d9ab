//! Causal language modelling data as transformers' `run_clm.py` prepares it: the token ids of
//! all documents concatenated and cut into blocks of `block_size`, the remainder dropped;
//! labels are the inputs (the model shifts them).

/// Blocks of `block_size` ids from the concatenated documents.
pub fn group_texts(documents: &[Vec<u32>], block_size: usize) -> Vec<Vec<u32>> {
    if block_size == 0 {
        return Vec::new();
    }
    let all: Vec<u32> = documents.iter().flatten().copied().collect();
    all.chunks_exact(block_size).map(<[u32]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenates_and_drops_the_remainder() {
        let docs = vec![vec![1, 2, 3], vec![4, 5], vec![6, 7, 8, 9]];
        assert_eq!(group_texts(&docs, 4), vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]]);
        assert!(group_texts(&docs, 10).is_empty());
    }
}
