//! Reading a policy file without ever blocking or exhausting memory: only a regular file, opened
//! without waiting (a FIFO or a device in its place is refused, never read), up to
//! [`MAX_POLICY_BYTES`].

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::PolicyError;

/// The largest policy file read (a 100,000-network policy is about 8 MiB).
pub const MAX_POLICY_BYTES: u64 = 32 * 1024 * 1024;

/// The bytes of the policy file at `path`; `shown` names it in errors.
pub(super) fn read(path: &Path, shown: &str) -> Result<Vec<u8>, PolicyError> {
    let refuse = |reason: String| PolicyError::Read {
        path: shown.to_string(),
        reason,
    };
    // O_NONBLOCK: opening a FIFO must not wait for a writer. A regular file ignores the flag.
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| refuse(e.to_string()))?;
    let metadata = file.metadata().map_err(|e| refuse(e.to_string()))?;
    if !metadata.is_file() {
        return Err(refuse(format!(
            "it is a {}, not a regular file; point --config at a policy file",
            kind_of(&metadata.file_type())
        )));
    }
    if metadata.len() > MAX_POLICY_BYTES {
        return Err(refuse(format!(
            "it holds {} bytes, more than the {MAX_POLICY_BYTES} a policy may have",
            metadata.len()
        )));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    // The file may grow while it is read: never read past the limit.
    (&mut file)
        .take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(e.to_string()))?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(refuse(format!(
            "it grew past the {MAX_POLICY_BYTES} bytes a policy may have while it was read"
        )));
    }
    Ok(bytes)
}

fn kind_of(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(path: &Path) -> String {
        match read(path, "p").unwrap_err() {
            PolicyError::Read { reason, .. } => reason,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("enforcer-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let fifo_reason = reason(&fifo);
        let dir_reason = reason(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(fifo_reason.contains("FIFO"), "{fifo_reason}");
        assert!(dir_reason.contains("directory"), "{dir_reason}");
        let zero = reason(Path::new("/dev/zero"));
        assert!(zero.contains("character device"), "{zero}");
    }
}
