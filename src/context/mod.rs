//! TEMP STUB
use std::path::{Path, PathBuf};
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct ContextError;
pub fn ignore_file_for(_c: &Path, _d: &Path) -> Option<PathBuf> {
    None
}
pub fn load_ignore_patterns(_c: &Path, _d: &Path) -> Result<Vec<String>, ContextError> {
    Ok(vec![])
}
