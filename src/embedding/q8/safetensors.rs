//! Reads tensors out of a `.safetensors` file one at a time (and the largest
//! in row chunks) with ordinary file reads, so loading never holds more than
//! one f32 matrix beside the quantised model: memory-mapping the whole f32
//! file would make its 470 MB count towards the process's peak RSS.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// An open safetensors file.
pub struct Tensors {
    path: PathBuf,
    file: File,
    base: u64,
    entries: HashMap<String, Entry>,
}

fn err(path: &Path, reason: impl Into<String>) -> String {
    format!("{}: {}", path.display(), reason.into())
}

impl Tensors {
    pub fn open(path: &Path) -> Result<Self, String> {
        let mut file = File::open(path).map_err(|e| err(path, e.to_string()))?;
        let len = file.metadata().map_err(|e| err(path, e.to_string()))?.len();
        let mut n = [0u8; 8];
        file.read_exact(&mut n)
            .map_err(|_| err(path, "weights file is empty or truncated"))?;
        let n = u64::from_le_bytes(n);
        if n > len.saturating_sub(8) || n > 100 << 20 {
            return Err(err(path, "the safetensors header length is out of range"));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header)
            .map_err(|e| err(path, e.to_string()))?;
        let value: serde_json::Value = serde_json::from_slice(&header)
            .map_err(|e| err(path, format!("the safetensors header does not parse: {e}")))?;
        let mut entries = HashMap::new();
        let base = 8 + n;
        if let serde_json::Value::Object(map) = value {
            for (name, v) in map {
                if name == "__metadata__" {
                    continue;
                }
                let e: Entry = serde_json::from_value(v)
                    .map_err(|e| err(path, format!("tensor {name}: {e}")))?;
                if e.data_offsets[0] > e.data_offsets[1] || base + e.data_offsets[1] > len {
                    return Err(err(path, format!("tensor {name} lies outside the file")));
                }
                entries.insert(name, e);
            }
        } else {
            return Err(err(path, "the safetensors header is not an object"));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            base,
            entries,
        })
    }

    /// The first of `names` present in the file (checkpoints differ in
    /// prefixes and LayerNorm naming).
    fn find<'a>(&self, names: &[&'a str]) -> Result<(&'a str, &Entry), String> {
        for name in names {
            if let Some(e) = self.entries.get(*name) {
                return Ok((name, e));
            }
        }
        Err(err(&self.path, format!("tensor {} is missing", names[0])))
    }

    fn element_size(&self, name: &str, dtype: &str) -> Result<usize, String> {
        match dtype {
            "F32" => Ok(4),
            "F16" | "BF16" => Ok(2),
            other => Err(err(
                &self.path,
                format!("tensor {name} has dtype {other}; expected F32, F16 or BF16"),
            )),
        }
    }

    /// Reads a whole tensor as f32, checking its shape.
    pub fn read(&mut self, names: &[&str], shape: &[usize]) -> Result<Vec<f32>, String> {
        let rows = shape.first().copied().unwrap_or(1);
        let mut out = Vec::with_capacity(shape.iter().product());
        self.read_rows(names, shape, rows.max(1), |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    }

    /// Reads a tensor `chunk_rows` rows at a time (rows = the first
    /// dimension), handing each chunk, converted to f32, to `sink`.
    pub fn read_rows(
        &mut self,
        names: &[&str],
        shape: &[usize],
        chunk_rows: usize,
        mut sink: impl FnMut(&[f32]) -> Result<(), String>,
    ) -> Result<(), String> {
        let (name, e) = self.find(names)?;
        if e.shape != shape {
            return Err(err(
                &self.path,
                format!("tensor {name} has shape {:?}, expected {shape:?}", e.shape),
            ));
        }
        let dtype = e.dtype.clone();
        let size = self.element_size(name, &dtype)?;
        let count: usize = shape.iter().product();
        let [start, end] = e.data_offsets;
        if (end - start) as usize != count * size {
            return Err(err(
                &self.path,
                format!("tensor {name} has the wrong byte length"),
            ));
        }
        let row: usize = shape.iter().skip(1).product();
        self.file
            .seek(SeekFrom::Start(self.base + start))
            .map_err(|e| err(&self.path, e.to_string()))?;
        let rows = shape.first().copied().unwrap_or(1);
        let mut bytes = Vec::new();
        let mut floats = Vec::new();
        let mut done = 0;
        while done < rows.max(1) {
            let n = chunk_rows.min(rows.max(1) - done);
            bytes.resize(n * row * size, 0);
            self.file
                .read_exact(&mut bytes)
                .map_err(|e| err(&self.path, format!("reading {name}: {e}")))?;
            floats.clear();
            match dtype.as_str() {
                "F32" => floats.extend(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                ),
                "F16" => floats.extend(
                    bytes
                        .chunks_exact(2)
                        .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
                ),
                _ => floats.extend(
                    bytes
                        .chunks_exact(2)
                        .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
                ),
            }
            if floats.iter().any(|x| !x.is_finite()) {
                return Err(err(
                    &self.path,
                    format!("tensor {name} holds NaN or infinity"),
                ));
            }
            sink(&floats)?;
            done += n;
        }
        Ok(())
    }
}
