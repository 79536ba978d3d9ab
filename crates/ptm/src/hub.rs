//! Finding a model directory: a local path, or `org/name` in the Hugging Face cache
//! (`models--org--name/snapshots/<rev>/`). Nothing is ever downloaded.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Resolves `spec` to a model directory.
pub fn resolve_model_dir(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        return Err(Error::ModelNotFound {
            spec: spec.to_string(),
            message: "is a file; give the model's directory".into(),
        });
    }
    if !is_repo_id(spec) {
        return Err(Error::ModelNotFound {
            spec: spec.to_string(),
            message: "no such directory (a Hugging Face id has the form org/name)".into(),
        });
    }
    let roots = cache_roots();
    for root in &roots {
        if let Some(dir) = snapshot_in(root, spec) {
            return Ok(dir);
        }
    }
    let searched: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    Err(Error::ModelNotFound {
        spec: spec.to_string(),
        message: format!(
            "not a local directory, and not in the Hugging Face cache (searched {}); ptm does not \
             download models: copy the model's files into a directory and pass its path",
            searched.join(", ")
        ),
    })
}

fn is_repo_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let ok = |s: Option<&str>| {
        s.is_some_and(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// The hub cache directories, in the order `huggingface_hub` consults its variables.
fn cache_roots() -> Vec<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("HF_HUB_CACHE") {
        return vec![p];
    }
    if let Some(p) = var("HF_HOME") {
        return vec![p.join("hub")];
    }
    let cache = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")));
    cache
        .map(|c| vec![c.join("huggingface").join("hub")])
        .unwrap_or_default()
}

/// `root/models--org--name/snapshots/<rev>` where `<rev>` is what `refs/main` names, else the
/// only snapshot, else the most recently modified one.
fn snapshot_in(root: &Path, repo_id: &str) -> Option<PathBuf> {
    let repo = root.join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let dir = snapshots.join(rev.trim());
        if dir.is_dir() {
            return Some(dir);
        }
    }
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let t = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, e.path())
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(is_repo_id("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(!is_repo_id("a/b/c") && !is_repo_id("plain") && !is_repo_id("/abs"));
    }

    #[test]
    fn snapshot_follows_refs_main() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("models--org--m");
        std::fs::create_dir_all(repo.join("snapshots/aaa")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/bbb")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "aaa\n").unwrap();
        assert_eq!(
            snapshot_in(root.path(), "org/m"),
            Some(repo.join("snapshots/aaa"))
        );
        assert_eq!(snapshot_in(root.path(), "org/other"), None);
    }
}
