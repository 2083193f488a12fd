//! Streaming checkpoint conversion: safetensors shards in, a bitsandbytes 4-bit
//! checkpoint out, one tensor at a time.
//!
//! The caller (Python, which can build the model skeleton on the meta device) decides
//! which tensors are Linear weights to quantize, following transformers' own rules; this
//! module only executes the plan. Each source shard becomes one output shard, so all of a
//! module's tensors (weight, absmax, quant_map, nested stats, quant_state) stay together.
//!
//! Memory: sources are memory-mapped and each tensor's pages are dropped from the
//! process (`MADV_DONTNEED`) once it is written, so resident memory stays near one
//! tensor's input plus its 4-bit output instead of growing with the model.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, UncheckedAdvice};
use safetensors::SafeTensors;

use super::double::{double_quantize, dynamic_map};
use super::quant::{num_blocks, packed_len, quantize_4bit, FloatDtype, QuantType};
use super::shard::{Planned, ShardWriter};
use super::state::QuantStateMeta;
use crate::error::{LadleError, Result};

/// Settings of one conversion.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub blocksize: usize,
    pub quant_type: QuantType,
    pub double_quant: bool,
    /// Cast float tensors to this dtype first (the model dtype); `None` keeps each as stored.
    pub dtype: Option<FloatDtype>,
    /// torch's float vector width and thread count, for the bit-exact absmax mean.
    pub lanes: usize,
    pub threads: usize,
}

/// One output shard: its path and the keys it holds.
#[derive(Clone, Debug)]
pub struct ShardReport {
    pub path: PathBuf,
    pub keys: Vec<String>,
    pub data_bytes: u64,
}

fn quant_err(path: &Path, msg: impl std::fmt::Display) -> LadleError {
    LadleError::Quant(format!("{}: {msg}", path.display()))
}

fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| LadleError::io(path, e))?;
    // SAFETY: the source checkpoint is read-only input; like every safetensors loader we
    // assume nobody truncates it while we read.
    unsafe { Mmap::map(&file) }.map_err(|e| LadleError::io(path, e))
}

/// The tensors of one module's quantized weight, in the order they are planned.
fn quantized_plan(name: &str, shape: &[usize], opts: &ConvertOptions) -> Vec<Planned> {
    let n: usize = shape.iter().product();
    let nb = num_blocks(n, opts.blocksize);
    let m = name.strip_suffix("weight").unwrap_or(name);
    let p = |suffix: &str, dtype: &str, shape: Vec<usize>, len: Option<u64>| Planned {
        name: format!("{m}{suffix}"),
        dtype: dtype.into(),
        shape,
        len,
    };
    let mut v = vec![
        p(
            "weight",
            "U8",
            vec![packed_len(n), 1],
            Some(packed_len(n) as u64),
        ),
        p("weight.quant_map", "F32", vec![16], Some(64)),
    ];
    if opts.double_quant {
        let nb2 = nb.div_ceil(super::double::NESTED_BLOCKSIZE);
        v.push(p("weight.absmax", "U8", vec![nb], Some(nb as u64)));
        v.push(p(
            "weight.nested_absmax",
            "F32",
            vec![nb2],
            Some(4 * nb2 as u64),
        ));
        v.push(p("weight.nested_quant_map", "F32", vec![256], Some(1024)));
    } else {
        v.push(p("weight.absmax", "F32", vec![nb], Some(4 * nb as u64)));
    }
    let state = format!(
        "weight.quant_state.bitsandbytes__{}",
        opts.quant_type.name()
    );
    v.push(p(&state, "U8", vec![], None));
    v
}

fn f32_bytes(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Convert every shard in `jobs` (source, destination). `quantize` names the Linear
/// weights to quantize, `transpose` those stored transposed (GPT-2 `Conv1D`).
/// `progress(done, total)` is called with source bytes processed; returning `false`
/// stops the conversion (Ctrl-C in the caller) with an error.
pub fn convert_checkpoint(
    jobs: &[(PathBuf, PathBuf)],
    quantize: &HashSet<String>,
    transpose: &HashSet<String>,
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<Vec<ShardReport>> {
    let cancelled = || LadleError::Quant("conversion cancelled".into());
    super::quant::check_blocksize(opts.blocksize)?;
    let mut maps = Vec::with_capacity(jobs.len());
    for (src, _) in jobs {
        maps.push(map_file(src)?);
    }
    let total: u64 = maps.iter().map(|m| m.len() as u64).sum();
    let mut done = 0u64;
    if !progress(done, total) {
        return Err(cancelled());
    }
    // Plan every shard before writing any: a source tensor named like a tensor the
    // quantizer generates (`X.weight.absmax` next to a quantized `X.weight`) would make
    // two header entries of one name, a file no reader accepts, so it is refused first.
    let mut found = HashSet::new();
    let mut planned: HashMap<String, String> = HashMap::new();
    let mut shards = Vec::with_capacity(jobs.len());
    for ((src, _), map) in jobs.iter().zip(&maps) {
        let st = SafeTensors::deserialize(map)
            .map_err(|e| quant_err(src, format!("not a valid safetensors file ({e})")))?;
        let mut names: Vec<(String, usize)> = st
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    v.data().as_ptr() as usize - map.as_ptr() as usize,
                )
            })
            .collect();
        // File order: a sequential read of the mapping.
        names.sort_by_key(|(_, off)| *off);
        let mut plan = Vec::new();
        for (name, _) in &names {
            let view = st
                .tensor(name)
                .map_err(|e| quant_err(src, format!("{name}: {e}")))?;
            let dtype = format!("{:?}", view.dtype());
            let entries = if quantize.contains(name) {
                FloatDtype::of_tensor(&dtype)
                    .map_err(|e| quant_err(src, format!("{name}: {e}")))?;
                found.insert(name.clone());
                quantized_plan(name, view.shape(), opts)
            } else {
                let (dtype, len) = copy_dtype(&dtype, view.data().len(), opts.dtype);
                vec![Planned {
                    name: name.clone(),
                    dtype,
                    shape: view.shape().to_vec(),
                    len: Some(len),
                }]
            };
            for p in entries {
                let origin = if p.name == *name {
                    format!("source tensor {name}")
                } else {
                    format!("the quantization of {name}")
                };
                if let Some(first) = planned.insert(p.name.clone(), origin.clone()) {
                    return Err(quant_err(
                        src,
                        format!(
                            "tensor {:?} would be written twice, by {first} and by {origin}; \
                             rename or drop the source tensor, or leave {name} unquantized",
                            p.name
                        ),
                    ));
                }
                plan.push(p);
            }
        }
        shards.push((st, names, plan));
    }
    if let Some(missing) = quantize.iter().find(|n| !found.contains(*n)) {
        return Err(LadleError::Quant(format!(
            "{missing} is planned for quantization but no source shard holds it"
        )));
    }
    let mut reports = Vec::with_capacity(jobs.len());
    for (((src, dst), map), (st, names, plan)) in jobs.iter().zip(&maps).zip(shards) {
        let mut w = ShardWriter::create(dst, &plan)?;
        for (name, offset) in &names {
            let view = st
                .tensor(name)
                .map_err(|e| quant_err(src, format!("{name}: {e}")))?;
            let data = view.data();
            let stored = format!("{:?}", view.dtype());
            if quantize.contains(name) {
                let shape = view.shape().to_vec();
                write_quantized(&mut w, name, &stored, &shape, data, transpose, opts).map_err(
                    |e| match e {
                        LadleError::Quant(m) => quant_err(src, format!("{name}: {m}")),
                        other => other,
                    },
                )?;
            } else {
                match (stored.parse::<FloatDtype>().ok(), opts.dtype) {
                    (Some(from), Some(to)) if from != to => {
                        w.write(name, &cast_bytes(from, to, data))?
                    }
                    _ => w.write(name, data)?,
                }
            }
            // Give the source pages back: the page cache keeps them, our RSS does not.
            // SAFETY: nothing borrows these pages past this point (views are re-taken).
            unsafe {
                let _ = map.unchecked_advise_range(UncheckedAdvice::DontNeed, *offset, data.len());
            }
            done += data.len() as u64;
            if !progress(done, total) {
                return Err(cancelled());
            }
        }
        let (keys, data_bytes) = w.finish()?;
        reports.push(ShardReport {
            path: dst.clone(),
            keys,
            data_bytes,
        });
    }
    Ok(reports)
}

/// dtype tag and byte length of a copied tensor after the optional cast.
fn copy_dtype(stored: &str, len: usize, to: Option<FloatDtype>) -> (String, u64) {
    match (stored.parse::<FloatDtype>().ok(), to) {
        (Some(from), Some(to)) if from != to => (
            to.safetensors_name().into(),
            (len / from.size() * to.size()) as u64,
        ),
        _ => (stored.to_string(), len as u64),
    }
}

fn cast_bytes(from: FloatDtype, to: FloatDtype, data: &[u8]) -> Vec<u8> {
    let mut xs = vec![0f32; data.len() / from.size()];
    super::quant::decode_into(from, data, &mut xs);
    encode(to, &xs)
}

fn encode(dtype: FloatDtype, xs: &[f32]) -> Vec<u8> {
    match dtype {
        FloatDtype::F32 => f32_bytes(xs),
        FloatDtype::BF16 => xs
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        FloatDtype::F16 => xs
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
    }
}

fn write_quantized(
    w: &mut ShardWriter,
    name: &str,
    stored: &str,
    shape: &[usize],
    data: &[u8],
    transpose: &HashSet<String>,
    opts: &ConvertOptions,
) -> Result<()> {
    let from = FloatDtype::of_tensor(stored)?;
    let model_dtype = opts.dtype.unwrap_or(from);
    // Bytes in the model dtype, in the orientation bitsandbytes quantizes.
    let mut owned: Option<Vec<u8>> = None;
    if model_dtype != from {
        owned = Some(cast_bytes(from, model_dtype, data));
    }
    let mut shape = shape.to_vec();
    if transpose.contains(name) {
        if shape.len() != 2 {
            return Err(LadleError::Quant(format!(
                "cannot transpose shape {shape:?}"
            )));
        }
        let src = owned.as_deref().unwrap_or(data);
        owned = Some(transpose_bytes(src, shape[0], shape[1], model_dtype.size()));
        shape.swap(0, 1);
    }
    let bytes = owned.as_deref().unwrap_or(data);
    let n: usize = shape.iter().product();
    let mut packed = vec![0u8; packed_len(n)];
    let mut absmax = vec![0f32; num_blocks(n, opts.blocksize)];
    quantize_4bit(
        model_dtype,
        bytes,
        opts.blocksize,
        opts.quant_type,
        &mut packed,
        &mut absmax,
    )?;
    drop(owned);
    let m = name.strip_suffix("weight").unwrap_or(name);
    w.write(name, &packed)?;
    drop(packed);
    let code = super::tables_f32(opts.quant_type);
    w.write(&format!("{m}weight.quant_map"), &f32_bytes(&code))?;
    let mut meta = QuantStateMeta {
        quant_type: opts.quant_type,
        blocksize: opts.blocksize,
        dtype: model_dtype,
        shape,
        nested_offset: None,
    };
    if opts.double_quant {
        let nested = double_quantize(&absmax, opts.lanes, opts.threads);
        w.write(&format!("{m}weight.absmax"), &nested.codes)?;
        w.write(
            &format!("{m}weight.nested_absmax"),
            &f32_bytes(&nested.absmax2),
        )?;
        w.write(
            &format!("{m}weight.nested_quant_map"),
            &f32_bytes(&dynamic_map()),
        )?;
        meta.nested_offset = Some(nested.offset);
    } else {
        w.write(&format!("{m}weight.absmax"), &f32_bytes(&absmax))?;
    }
    w.write(&format!("{m}{}", meta.key_suffix()), &meta.to_json_bytes())?;
    Ok(())
}

fn transpose_bytes(src: &[u8], rows: usize, cols: usize, esize: usize) -> Vec<u8> {
    let mut out = vec![0u8; src.len()];
    for r in 0..rows {
        for c in 0..cols {
            let s = (r * cols + c) * esize;
            let d = (c * rows + r) * esize;
            out[d..d + esize].copy_from_slice(&src[s..s + esize]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_rows_and_columns() {
        let src: Vec<u8> = (0..6).collect(); // 2 x 3, one byte each
        assert_eq!(transpose_bytes(&src, 2, 3, 1), vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn a_source_name_that_collides_with_a_generated_one_is_refused_before_writing() {
        use safetensors::tensor::{Dtype, TensorView};
        let dir = std::env::temp_dir().join(format!("ladle-clash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (src, dst) = (dir.join("in.safetensors"), dir.join("out.safetensors"));
        let weight = vec![0u8; 64 * 4];
        let absmax = vec![0u8; 4];
        let tensors = [
            (
                "m.weight",
                TensorView::new(Dtype::F32, vec![1, 64], &weight).unwrap(),
            ),
            (
                "m.weight.absmax",
                TensorView::new(Dtype::F32, vec![1], &absmax).unwrap(),
            ),
        ];
        safetensors::serialize_to_file(tensors, None, &src).unwrap();
        let opts = ConvertOptions {
            blocksize: 64,
            quant_type: QuantType::Nf4,
            double_quant: false,
            dtype: None,
            lanes: 16,
            threads: 1,
        };
        let quantize = HashSet::from(["m.weight".to_string()]);
        let err = convert_checkpoint(
            &[(src, dst.clone())],
            &quantize,
            &HashSet::new(),
            &opts,
            &mut |_, _| true,
        )
        .unwrap_err();
        assert!(matches!(err, LadleError::Quant(_)), "{err}");
        assert!(err
            .to_string()
            .contains("\"m.weight.absmax\" would be written twice"));
        assert!(!dst.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plan_has_the_transformers_keys() {
        let opts = ConvertOptions {
            blocksize: 64,
            quant_type: QuantType::Nf4,
            double_quant: true,
            dtype: None,
            lanes: 16,
            threads: 1,
        };
        let names: Vec<String> = quantized_plan("m.q_proj.weight", &[64, 128], &opts)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            names,
            vec![
                "m.q_proj.weight",
                "m.q_proj.weight.quant_map",
                "m.q_proj.weight.absmax",
                "m.q_proj.weight.nested_absmax",
                "m.q_proj.weight.nested_quant_map",
                "m.q_proj.weight.quant_state.bitsandbytes__nf4",
            ]
        );
    }
}
