//! Ownership of a training run directory.
//!
//! A run holds an OS lock on `<run>/.lock` (flock through `File::try_lock`) for as long as it
//! writes there, so a second process on the same directory is refused instead of interleaving
//! checkpoints and metrics; the kernel drops the lock when the holder exits or is killed, so a
//! stale `.lock` never blocks a resume. Claiming a directory also removes the temporaries a
//! crashed or failed write left behind (`.tmp-step-*` directories, `*.tmp-<pid>` files), and
//! refuses to start a fresh run over an existing one unless told to move it aside.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::CoreError;

/// The lock file inside a run directory.
pub const LOCK_FILE: &str = ".lock";

/// How a run is about to use its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A new run: the directory must be absent or empty.
    Fresh,
    /// A new run over an existing one: the old directory is moved aside to the first free
    /// `<dir>.old-<n>` (reported by [`RunDir::moved_to`]); nothing is deleted.
    Restart,
    /// Continue the run the directory holds.
    Resume,
}

/// A claimed run directory; the lock is released when this is dropped.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    moved_to: Option<PathBuf>,
    removed: Vec<PathBuf>,
    _lock: File,
}

impl RunDir {
    /// Locks `path` (creating it) for this process and prepares it for `claim`.
    ///
    /// Errors: [`CoreError::Locked`] when another live process holds the lock (naming its pid),
    /// [`CoreError::RunExists`] for a fresh claim on a directory that holds files.
    pub fn claim(path: &Path, claim: Claim) -> Result<RunDir, CoreError> {
        fs::create_dir_all(path).map_err(|e| CoreError::io(path, e))?;
        let mut lock = lock(path)?;
        let mut removed = remove_stale_temporaries(path)?;
        let mut moved_to = None;
        if claim != Claim::Resume && !is_empty(path)? {
            if claim == Claim::Fresh {
                return Err(CoreError::RunExists {
                    path: path.to_path_buf(),
                });
            }
            let dest = free_sibling(path)?;
            // The old directory (and the lock we hold inside it) moves away whole; then a new,
            // empty directory takes the name and is locked before the old lock is released.
            fs::rename(path, &dest).map_err(|e| CoreError::io(&dest, e))?;
            fs::create_dir_all(path).map_err(|e| CoreError::io(path, e))?;
            let new_lock = self::lock(path)?;
            let _ = fs::remove_file(dest.join(LOCK_FILE));
            lock = new_lock;
            moved_to = Some(dest);
            removed.clear();
        }
        Ok(RunDir {
            path: path.to_path_buf(),
            moved_to,
            removed,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a [`Claim::Restart`] moved the previous run, if there was one.
    pub fn moved_to(&self) -> Option<&Path> {
        self.moved_to.as_deref()
    }

    /// The stale temporaries removed when the directory was claimed.
    pub fn removed(&self) -> &[PathBuf] {
        &self.removed
    }

    /// The step numbers of the checkpoints the directory holds, ascending.
    pub fn steps(&self) -> Result<Vec<usize>, CoreError> {
        crate::checkpoint::list_steps(&self.path)
    }
}

/// Takes the lock of `dir`, writing this process's pid into the lock file.
fn lock(dir: &Path) -> Result<File, CoreError> {
    let p = dir.join(LOCK_FILE);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .map_err(|e| CoreError::io(&p, e))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = f.read_to_string(&mut text);
            return Err(CoreError::Locked {
                path: dir.to_path_buf(),
                holder: text.trim().parse().ok(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(CoreError::io(&p, e)),
    }
    let pid = std::process::id().to_string();
    f.set_len(0)
        .and_then(|_| f.seek(SeekFrom::Start(0)))
        .and_then(|_| f.write_all(pid.as_bytes()))
        .and_then(|_| f.flush())
        .map_err(|e| CoreError::io(&p, e))?;
    Ok(f)
}

/// Whether `name` is a temporary of [`crate::checkpoint`]'s writers: a directory in the
/// making (`.tmp-step-00000020-<pid>`, `.tmp-iteration-001-<pid>`) or an atomically replaced file
/// (`latest.tmp-<pid>`, `metrics.tmp-<pid>`).
pub fn is_temporary(name: &str) -> bool {
    let digits = |pid: &str| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = name.strip_prefix(".tmp-") {
        return rest
            .rsplit_once('-')
            .is_some_and(|(stem, pid)| !stem.is_empty() && digits(pid));
    }
    match name.rsplit_once(".tmp-") {
        Some((stem, pid)) => {
            !stem.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Removes the temporaries a failed or killed writer left in `dir` (the caller holds its lock,
/// so no live writer owns them); returns what was removed.
fn remove_stale_temporaries(dir: &Path) -> Result<Vec<PathBuf>, CoreError> {
    let mut removed = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| CoreError::io(dir, e))? {
        let e = e.map_err(|e| CoreError::io(dir, e))?;
        let name = e.file_name().to_string_lossy().to_string();
        if !is_temporary(&name) {
            continue;
        }
        let p = e.path();
        let r = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        r.map_err(|err| CoreError::io(&p, err))?;
        removed.push(p);
    }
    Ok(removed)
}

/// Whether `dir` holds nothing but its lock file.
fn is_empty(dir: &Path) -> Result<bool, CoreError> {
    for e in fs::read_dir(dir).map_err(|e| CoreError::io(dir, e))? {
        let e = e.map_err(|e| CoreError::io(dir, e))?;
        if e.file_name() != LOCK_FILE {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The first `<dir>.old-<n>` (n = 1, 2, …) that does not exist.
fn free_sibling(dir: &Path) -> Result<PathBuf, CoreError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| {
            CoreError::InvalidConfig(format!(
                "{}: a run directory needs a name to move it aside",
                dir.display()
            ))
        })?;
    (1..)
        .map(|n| dir.with_file_name(format!("{name}.old-{n}")))
        .find(|p| !p.exists())
        .ok_or_else(|| CoreError::InvalidConfig("no free name".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tweedie-rundir-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let _ = fs::remove_dir_all(d.with_file_name(format!(
            "{}.old-1",
            d.file_name().unwrap().to_string_lossy()
        )));
        d
    }

    #[test]
    fn a_second_claim_is_refused_naming_the_holder_and_released_on_drop() {
        let d = tmp("lock");
        let held = RunDir::claim(&d, Claim::Fresh).unwrap();
        let e = RunDir::claim(&d, Claim::Resume).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, CoreError::Locked { holder: Some(p), .. } if p == std::process::id()),
            "{msg}"
        );
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        drop(held);
        // A stale lock file (its holder gone) does not block.
        RunDir::claim(&d, Claim::Resume).unwrap();
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn fresh_refuses_a_used_directory_and_restart_moves_it_aside() {
        let d = tmp("fresh");
        fs::create_dir_all(d.join("step-00000005")).unwrap();
        fs::write(d.join("metrics.jsonl"), "{}\n").unwrap();
        let e = RunDir::claim(&d, Claim::Fresh).unwrap_err();
        assert!(matches!(e, CoreError::RunExists { .. }), "{e}");
        assert!(
            d.join("metrics.jsonl").is_file(),
            "a refused claim touches nothing"
        );
        let r = RunDir::claim(&d, Claim::Restart).unwrap();
        let old = r.moved_to().unwrap().to_path_buf();
        assert!(old.join("metrics.jsonl").is_file() && old.join("step-00000005").is_dir());
        assert!(is_empty(&d).unwrap());
        drop(r);
        fs::remove_dir_all(&d).unwrap();
        fs::remove_dir_all(&old).unwrap();
    }

    #[test]
    fn stale_temporaries_are_removed_and_other_files_kept() {
        let d = tmp("stale");
        fs::create_dir_all(d.join(".tmp-step-00000020-4242")).unwrap();
        fs::write(d.join(".tmp-step-00000020-4242/model.bpk"), [0u8; 64]).unwrap();
        fs::write(d.join("latest.tmp-77"), "x").unwrap();
        fs::write(d.join("notes.tmp-draft"), "mine").unwrap();
        let r = RunDir::claim(&d, Claim::Resume).unwrap();
        assert_eq!(r.removed().len(), 2);
        assert!(!d.join(".tmp-step-00000020-4242").exists());
        assert!(!d.join("latest.tmp-77").exists());
        assert!(d.join("notes.tmp-draft").exists());
        drop(r);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temporary_names() {
        assert!(is_temporary(".tmp-step-00000001-12"));
        assert!(is_temporary(".tmp-iteration-001-12"));
        assert!(!is_temporary(".tmp-notes"));
        assert!(is_temporary("metrics.tmp-3"));
        assert!(!is_temporary("metrics.jsonl"));
        assert!(!is_temporary(".tmp-"));
        assert!(!is_temporary("x.tmp-12a"));
    }
}
