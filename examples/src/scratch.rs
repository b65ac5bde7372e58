//! Small helpers the examples, the benchmark driver and their tests share: deterministic
//! pseudo-random data and a temporary directory that cleans up after itself.

use std::path::{Path, PathBuf};

/// Marsaglia's xorshift64: a tiny deterministic generator, good enough for generated data
/// (not for anything that needs real randomness). The seed must not be zero.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `[0, 1)` with 24 bits of precision.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// `len` bytes, the low byte of each successive draw.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// A directory under the system's temporary directory, emptied when created and removed
/// on drop (also on error).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates (or empties) `<temp>/<name>`; put the process id in `name` to keep
    /// concurrent runs apart.
    pub fn new(name: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
