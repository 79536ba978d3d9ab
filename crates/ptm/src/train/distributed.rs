//! Data-parallel training: the processes of one run and the collective operations the trainer
//! needs of them. Every rank holds the whole model; each step, rank r computes the gradients of
//! its slice of the global batch, the sums are all-reduced (in f32 buckets), and every rank
//! takes the same optimizer step, so all keep identical parameters.
//!
//! Over MPI (the `mpi` feature; Open MPI from the system, as Horovod and torch.distributed's
//! MPI backend use): `mpirun -np N ptm ...` gives the world size and rank. One process without
//! mpirun is the ordinary run, with no collective at all.

use crate::error::Result;

/// The processes of a data-parallel run.
pub trait Collective {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Replaces `values` with their element-wise sum over all ranks.
    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()>;
    /// The same for a few f64 statistics (loss sums, target counts).
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()>;
}

impl std::fmt::Debug for dyn Collective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rank {} of {}", self.rank(), self.size())
    }
}

/// Gradients travel in buckets of this many f32 (16 MB), as DDP's bucketing bounds the
/// buffers a reduction needs at once.
pub const BUCKET: usize = 4 << 20;

/// Sums `values` over the ranks in buckets; nothing to do for one process.
pub fn all_reduce_bucketed(world: Option<&dyn Collective>, values: &mut [f32]) -> Result<()> {
    let Some(w) = world else { return Ok(()) };
    for bucket in values.chunks_mut(BUCKET) {
        w.all_reduce_sum(bucket)?;
    }
    Ok(())
}

/// Sums a few statistics over the ranks; nothing to do for one process.
pub fn all_reduce_stats(world: Option<&dyn Collective>, values: &mut [f64]) -> Result<()> {
    world.map_or(Ok(()), |w| w.all_reduce_sum_f64(values))
}

/// Evaluation split across the ranks and gathered: rank r runs batches r, r + N, r + 2N, ...
/// (evaluation batches go longest first, so the strides share the work evenly), and every rank
/// gets every batch's values, in order. A batch is computed as it would be in one process, so
/// the metrics do not depend on the world size. Two sums gather them: the batches' lengths, then
/// their values, each rank filling its own places with the others' left zero.
pub fn gather_batches(
    world: Option<&dyn Collective>,
    batches: usize,
    mut run: impl FnMut(usize) -> Result<Vec<f64>>,
) -> Result<Vec<Vec<f64>>> {
    let (rank, size) = world.map_or((0, 1), |w| (w.rank(), w.size()));
    let mine = (rank..batches)
        .step_by(size)
        .map(|i| Ok((i, run(i)?)))
        .collect::<Result<Vec<_>>>()?;
    let Some(w) = world.filter(|w| w.size() > 1) else {
        return Ok(mine.into_iter().map(|(_, v)| v).collect());
    };
    let mut lengths = vec![0f64; batches];
    for (i, v) in &mine {
        lengths[*i] = v.len() as f64;
    }
    w.all_reduce_sum_f64(&mut lengths)?;
    let mut offsets = vec![0usize; batches + 1];
    for (i, len) in lengths.iter().enumerate() {
        offsets[i + 1] = offsets[i] + *len as usize;
    }
    let mut values = vec![0f64; offsets[batches]];
    for (i, v) in mine {
        values[offsets[i]..offsets[i + 1]].copy_from_slice(&v);
    }
    w.all_reduce_sum_f64(&mut values)?;
    Ok(offsets
        .windows(2)
        .map(|o| values[o[0]..o[1]].to_vec())
        .collect())
}

#[cfg(feature = "mpi")]
pub use self::mpi_world::MpiWorld;

#[cfg(feature = "mpi")]
mod mpi_world {
    use mpi::collective::{CommunicatorCollectives, SystemOperation};
    use mpi::topology::{Communicator, SimpleCommunicator};

    use super::Collective;
    use crate::error::{Error, Result};

    /// MPI's world communicator.
    pub struct MpiWorld {
        comm: SimpleCommunicator,
    }

    impl MpiWorld {
        /// Initialises MPI when this process was started by mpirun (Open MPI sets
        /// OMPI_COMM_WORLD_SIZE); `None` for an ordinary single-process run. Dropping the
        /// returned universe finalises MPI: keep it to the end of a successful run, and on a
        /// failure exit without dropping it, so mpirun ends the other ranks instead of waiting
        /// for this one in a collective.
        pub fn init() -> Result<Option<(mpi::environment::Universe, &'static MpiWorld)>> {
            if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_none()
                && std::env::var_os("PMI_SIZE").is_none()
            {
                return Ok(None);
            }
            let universe = mpi::initialize().ok_or_else(|| {
                Error::invalid("MPI could not be initialised (already initialised?)")
            })?;
            let comm = universe.world();
            if comm.size() < 2 {
                return Ok(None);
            }
            let world: &'static MpiWorld = Box::leak(Box::new(MpiWorld { comm }));
            Ok(Some((universe, world)))
        }
    }

    impl Collective for MpiWorld {
        fn rank(&self) -> usize {
            self.comm.rank() as usize
        }

        fn size(&self) -> usize {
            self.comm.size() as usize
        }

        fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
            let send = values.to_vec();
            self.comm
                .all_reduce_into(&send[..], values, SystemOperation::sum());
            Ok(())
        }

        fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
            let send = values.to_vec();
            self.comm
                .all_reduce_into(&send[..], values, SystemOperation::sum());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier, Mutex};

    use super::*;

    /// Ranks as threads of one process, summing through shared memory.
    struct ThreadWorld {
        rank: usize,
        size: usize,
        sum: Arc<Mutex<Vec<f64>>>,
        barrier: Arc<Barrier>,
    }

    impl Collective for ThreadWorld {
        fn rank(&self) -> usize {
            self.rank
        }

        fn size(&self) -> usize {
            self.size
        }

        fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
            let mut wide: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
            self.all_reduce_sum_f64(&mut wide)?;
            for (v, w) in values.iter_mut().zip(wide) {
                *v = w as f32;
            }
            Ok(())
        }

        fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
            if self.rank == 0 {
                *self.sum.lock().unwrap() = vec![0.0; values.len()];
            }
            self.barrier.wait();
            for (s, v) in self.sum.lock().unwrap().iter_mut().zip(values.iter()) {
                *s += v;
            }
            self.barrier.wait();
            values.copy_from_slice(&self.sum.lock().unwrap());
            self.barrier.wait();
            Ok(())
        }
    }

    /// Batch i's values: i of them, so some batches are empty.
    fn batch(i: usize) -> Result<Vec<f64>> {
        Ok((0..i % 3).map(|k| (i * 10 + k) as f64 - 0.5).collect())
    }

    #[test]
    fn gathered_batches_equal_one_process_and_each_runs_once() {
        let alone = gather_batches(None, 8, batch).unwrap();
        assert_eq!(alone.len(), 8);
        assert_eq!(alone[5], [49.5, 50.5]);
        let size = 3;
        let (sum, barrier) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Barrier::new(size)),
        );
        let ranks: Vec<_> = (0..size)
            .map(|rank| {
                let world = ThreadWorld {
                    rank,
                    size,
                    sum: sum.clone(),
                    barrier: barrier.clone(),
                };
                std::thread::spawn(move || {
                    let mut ran = Vec::new();
                    let got = gather_batches(Some(&world), 8, |i| {
                        ran.push(i);
                        batch(i)
                    })
                    .unwrap();
                    (ran, got)
                })
            })
            .collect();
        let mut ran_anywhere = Vec::new();
        for (rank, r) in ranks.into_iter().enumerate() {
            let (ran, got) = r.join().unwrap();
            assert_eq!(got, alone, "rank {rank}");
            assert_eq!(ran, (rank..8).step_by(size).collect::<Vec<_>>());
            ran_anywhere.extend(ran);
        }
        ran_anywhere.sort();
        assert_eq!(ran_anywhere, (0..8).collect::<Vec<_>>());
    }
}
