//! A safetensors writer that streams: tensors go to disk one by one with positional
//! writes, so nothing but the tensor at hand is in memory.
//!
//! The format is `u64 LE header length | JSON header | data`, the header giving each
//! tensor's dtype, shape and `[start, end)` byte range; readers require the ranges to
//! tile the data exactly. The catch for streaming is that the header comes first and one
//! entry's size (the quant_state JSON, whose float has a variable number of digits) is
//! known only after quantizing. So the layout is planned up front:
//!
//! 1. tensors of known size, wider dtypes first (every tensor stays aligned to its element
//!    size, which torch needs to view the bytes without copying);
//! 2. tensors whose size is known only later, appended at the end (all uint8);
//!
//! and the header space is reserved from an upper bound (every number printed at its
//! widest), then written last, padded with spaces as the format allows.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::error::{LadleError, Result};

/// One tensor the shard will hold.
#[derive(Clone, Debug)]
pub struct Planned {
    pub name: String,
    /// safetensors dtype tag (`F32`, `BF16`, `U8`, ...).
    pub dtype: String,
    /// Shape; for a tensor of unknown size, the size is set when it is written.
    pub shape: Vec<usize>,
    /// Byte length, `None` when known only at write time (must then be `U8`, 1-D).
    pub len: Option<u64>,
}

fn align_of(dtype: &str) -> u64 {
    match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        _ => 1,
    }
}

pub struct ShardWriter {
    path: PathBuf,
    file: File,
    data_start: u64,
    header_room: usize,
    /// name -> (dtype, shape, start, end) once written or placed.
    placed: BTreeMap<String, (String, Vec<usize>, u64, u64)>,
    written: std::collections::HashSet<String>,
    /// End of the fixed region: where late (unknown-size) tensors are appended.
    tail: u64,
    late: Vec<String>,
}

impl ShardWriter {
    /// Create `path` and lay out `plan`.
    pub fn create(path: &Path, plan: &[Planned]) -> Result<Self> {
        let mut fixed: Vec<&Planned> = plan.iter().filter(|p| p.len.is_some()).collect();
        // Widest alignment first; within one alignment, keep the plan's order.
        fixed.sort_by_key(|p| std::cmp::Reverse(align_of(&p.dtype)));
        let mut placed = BTreeMap::new();
        let mut pos = 0u64;
        for p in fixed {
            let len = p.len.unwrap_or(0);
            placed.insert(
                p.name.clone(),
                (p.dtype.clone(), p.shape.clone(), pos, pos + len),
            );
            pos += len;
        }
        let late: Vec<String> = plan
            .iter()
            .filter(|p| p.len.is_none())
            .map(|p| p.name.clone())
            .collect();
        // Upper bound of the header: every number at 20 digits.
        let mut widest = Map::new();
        widest.insert("__metadata__".into(), json!({"format": "pt"}));
        for p in plan {
            let shape: Vec<u64> = p.shape.iter().map(|_| u64::MAX).collect();
            widest.insert(
                p.name.clone(),
                json!({"dtype": p.dtype, "shape": shape, "data_offsets": [u64::MAX, u64::MAX]}),
            );
        }
        let bound = serde_json::to_vec(&Value::Object(widest))
            .expect("json")
            .len();
        // 8-byte length prefix + header is kept a multiple of 8 so data starts aligned.
        let header_room = (8 + bound).div_ceil(8) * 8 - 8;
        let data_start = 8 + header_room as u64;
        let file = File::create(path).map_err(|e| LadleError::io(path, e))?;
        Ok(ShardWriter {
            path: path.to_path_buf(),
            file,
            data_start,
            header_room,
            placed,
            written: Default::default(),
            tail: pos,
            late,
        })
    }

    /// Write the bytes of `name` (a planned tensor). Late tensors get their 1-D size here.
    pub fn write(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let (start, end) = match self.placed.get(name) {
            Some((_, _, s, e)) => (*s, *e),
            None => {
                if !self.late.iter().any(|n| n == name) {
                    return Err(LadleError::Value(format!(
                        "{name} is not planned in this shard"
                    )));
                }
                let (s, e) = (self.tail, self.tail + data.len() as u64);
                self.tail = e;
                self.placed
                    .insert(name.to_string(), ("U8".into(), vec![data.len()], s, e));
                (s, e)
            }
        };
        if end - start != data.len() as u64 {
            return Err(LadleError::Value(format!(
                "{name}: planned {} bytes, got {}",
                end - start,
                data.len()
            )));
        }
        self.file
            .write_all_at(data, self.data_start + start)
            .map_err(|e| LadleError::io(&self.path, e))?;
        self.written.insert(name.to_string());
        Ok(())
    }

    /// Write the header, flush and sync. Returns the keys (sorted) and the data size.
    pub fn finish(mut self) -> Result<(Vec<String>, u64)> {
        if let Some(missing) = self.placed.keys().find(|k| !self.written.contains(*k)) {
            return Err(LadleError::Value(format!(
                "{missing} was planned but never written"
            )));
        }
        if let Some(missing) = self.late.iter().find(|k| !self.written.contains(*k)) {
            return Err(LadleError::Value(format!(
                "{missing} was planned but never written"
            )));
        }
        let mut header = Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        for (name, (dtype, shape, s, e)) in &self.placed {
            header.insert(
                name.clone(),
                json!({"dtype": dtype, "shape": shape, "data_offsets": [s, e]}),
            );
        }
        let mut bytes = serde_json::to_vec(&Value::Object(header)).expect("json");
        if bytes.len() > self.header_room {
            return Err(LadleError::Value(
                "safetensors header outgrew its bound".into(),
            ));
        }
        bytes.resize(self.header_room, b' ');
        let mut head = Vec::with_capacity(8 + bytes.len());
        head.extend_from_slice(&(self.header_room as u64).to_le_bytes());
        head.extend_from_slice(&bytes);
        let io = |e| LadleError::io(&self.path, e);
        self.file.write_all_at(&head, 0).map_err(io)?;
        self.file.set_len(self.data_start + self.tail).map_err(io)?;
        self.file.flush().map_err(io)?;
        self.file.sync_all().map_err(io)?;
        Ok((self.placed.keys().cloned().collect(), self.tail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_shard_reads_back_with_the_safetensors_crate() {
        let dir = std::env::temp_dir().join(format!("ladle-shard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.safetensors");
        let plan = vec![
            Planned {
                name: "w".into(),
                dtype: "U8".into(),
                shape: vec![3, 1],
                len: Some(3),
            },
            Planned {
                name: "a".into(),
                dtype: "F32".into(),
                shape: vec![2],
                len: Some(8),
            },
            Planned {
                name: "s".into(),
                dtype: "U8".into(),
                shape: vec![],
                len: None,
            },
        ];
        let mut w = ShardWriter::create(&path, &plan).unwrap();
        w.write("s", b"{\"x\": 1}").unwrap();
        w.write("w", &[1, 2, 3]).unwrap();
        w.write("a", &[0, 0, 128, 63, 0, 0, 0, 64]).unwrap();
        let (keys, size) = w.finish().unwrap();
        assert_eq!(keys, vec!["a", "s", "w"]);
        assert_eq!(size, 3 + 8 + 8);
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("w").unwrap().data(), &[1, 2, 3]);
        assert_eq!(st.tensor("s").unwrap().data(), b"{\"x\": 1}");
        assert_eq!(st.tensor("a").unwrap().data()[2..4], [128, 63]);
        // The float tensor comes first, so it is 4-byte aligned in the file.
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert_eq!((8 + n) % 8, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
