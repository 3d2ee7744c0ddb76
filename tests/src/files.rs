//! Temporary files and directories, removed on drop (also when the test fails).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT_FILE: AtomicUsize = AtomicUsize::new(0);

/// A file in the temporary directory, removed on drop.
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// Writes `content` to a new file whose name ends in `suffix`.
    pub fn new(suffix: &str, content: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "enforcer-test-{}-{}{suffix}",
            std::process::id(),
            NEXT_FILE.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, content).expect("write temporary file");
        TempFile { path }
    }

    /// The file's path, as a string.
    pub fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A directory in the temporary directory, removed with its content on drop (also when the
/// test fails).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a new empty directory whose name starts with `role`.
    pub fn new(role: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "enforcer-{role}-{}-{}",
            std::process::id(),
            NEXT_FILE.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("create temporary directory");
        TempDir { path }
    }

    /// The directory's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
