//! Little-endian arrays in and out of the index's binary files
//! (`graph.bin`, `lexical.bin`): length-prefixed `u32`/`u64` arrays and
//! byte strings, read back with bounds checks so that a damaged file is an
//! error, never a panic.

use std::io::Write;

/// Writes `u64` length prefixes and little-endian arrays.
pub struct Writer<W: Write>(pub W);

impl<W: Write> Writer<W> {
    pub fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.0.write_all(b)
    }

    pub fn u32(&mut self, x: u32) -> std::io::Result<()> {
        self.0.write_all(&x.to_le_bytes())
    }

    pub fn u64(&mut self, x: u64) -> std::io::Result<()> {
        self.0.write_all(&x.to_le_bytes())
    }

    /// A length, then the bytes.
    pub fn blob(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.u64(b.len() as u64)?;
        self.0.write_all(b)
    }

    /// A length, then the values.
    pub fn u32s(&mut self, xs: &[u32]) -> std::io::Result<()> {
        self.u64(xs.len() as u64)?;
        let bytes: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.0.write_all(&bytes)
    }
}

/// Reads what [`Writer`] wrote, refusing to read past the end.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    pub fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(len).ok_or("truncated")?;
        let s = self.bytes.get(self.at..end).ok_or("truncated")?;
        self.at = end;
        Ok(s)
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A length the rest of the file can hold (`unit` bytes per element).
    fn len(&mut self, unit: usize) -> Result<usize, String> {
        let len = usize::try_from(self.u64()?).map_err(|_| "length out of range")?;
        match len.checked_mul(unit) {
            Some(bytes) if bytes <= self.bytes.len() - self.at => Ok(len),
            _ => Err("truncated".into()),
        }
    }

    pub fn blob(&mut self) -> Result<&'a [u8], String> {
        let len = self.len(1)?;
        self.take(len)
    }

    pub fn u32s(&mut self) -> Result<Vec<u32>, String> {
        let len = self.len(4)?;
        Ok(self
            .take(len * 4)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Fails unless everything was read.
    pub fn finish(self) -> Result<(), String> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err("trailing bytes".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_truncation() {
        let mut w = Writer(Vec::new());
        w.bytes(b"MAGIC").unwrap();
        w.u32(7).unwrap();
        w.blob(b"abc").unwrap();
        w.u32s(&[1, 2, 3]).unwrap();
        let buf = w.0;
        let mut r = Reader::new(&buf);
        assert_eq!(r.take(5).unwrap(), b"MAGIC");
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.blob().unwrap(), b"abc");
        assert_eq!(r.u32s().unwrap(), vec![1, 2, 3]);
        r.finish().unwrap();
        for cut in 0..buf.len() {
            let mut r = Reader::new(&buf[..cut]);
            let whole = r.take(5).is_ok()
                && r.u32().is_ok()
                && r.blob().is_ok()
                && r.u32s().is_ok()
                && r.finish().is_ok();
            assert!(!whole, "cut at {cut}");
        }
        // A huge length is refused before anything is allocated.
        let mut w = Writer(Vec::new());
        w.u64(u64::MAX / 2).unwrap();
        assert!(Reader::new(&w.0).u32s().is_err());
    }
}
