//! Content fingerprints for the caches: a streaming 128-bit xxh3 over file bytes.
//! Not cryptographic; it only has to change when any input byte changes.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use crate::error::{LadleError, Result};

/// Hex xxh3-128 of the concatenated bytes of `paths`, each preceded by its length so
/// that moving bytes between files changes the digest.
pub fn fingerprint_files<P: AsRef<Path>>(paths: &[P]) -> Result<String> {
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in paths {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| LadleError::io(path, e))?;
        let len = file.metadata().map_err(|e| LadleError::io(path, e))?.len();
        hasher.update(&len.to_le_bytes());
        loop {
            let n = file.read(&mut buf).map_err(|e| LadleError::io(path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(format!("{:032x}", hasher.digest128()))
}

/// Hex xxh3-128 of a byte string.
pub fn fingerprint_bytes(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_fingerprint_changes_with_one_byte() {
        let dir = std::env::temp_dir().join(format!("ladle-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.txt");
        std::fs::write(&a, b"hello world").unwrap();
        let first = fingerprint_files(&[&a]).unwrap();
        assert_eq!(first, fingerprint_files(&[&a]).unwrap());
        std::fs::write(&a, b"hello worle").unwrap();
        assert_ne!(first, fingerprint_files(&[&a]).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn length_prefix_separates_files() {
        let dir = std::env::temp_dir().join(format!("ladle-fp2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, b"ab").unwrap();
        std::fs::write(&b, b"c").unwrap();
        let one = fingerprint_files(&[&a, &b]).unwrap();
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"bc").unwrap();
        assert_ne!(one, fingerprint_files(&[&a, &b]).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
