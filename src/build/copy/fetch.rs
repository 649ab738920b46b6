//! ADD's URL sources: fetched once, mode 0600, mtime from `Last-Modified`,
//! `--checksum` verified, never extracted.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use super::run::Copier;
use super::stage::{Meta, Stage};
use super::CopyError;

/// Whether an ADD source is fetched rather than read from the context.
pub(super) fn is_remote(src: &str) -> bool {
    src.starts_with("http://") || src.starts_with("https://") || src.starts_with("git@")
}

/// Reads a body while hashing it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// `Last-Modified` (RFC 7231 IMF-fixdate) as seconds since the epoch.
pub(super) fn http_date(s: &str) -> Option<i64> {
    let fmt = time::format_description::parse_borrowed::<1>(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT",
    )
    .ok()?;
    time::PrimitiveDateTime::parse(s.trim(), &fmt)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// The file name a download gets inside a directory destination.
fn file_name(url: &reqwest::Url, disposition: Option<&str>) -> Option<String> {
    if let Some(d) = disposition {
        for part in d.split(';') {
            if let Some(v) = part.trim().strip_prefix("filename=") {
                let v = v.trim_matches('"');
                let base = v.rsplit('/').next().unwrap_or(v);
                if !base.is_empty() && base != "." && base != ".." {
                    return Some(base.to_string());
                }
            }
        }
    }
    url.path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl Copier<'_> {
    /// ADD of a URL: mode 0600 (unless `--chmod`), mtime `Last-Modified`.
    pub(super) fn fetch(&self, stage: &mut Stage, src: &str) -> Result<(), CopyError> {
        let err = |reason: String| CopyError::Fetch {
            url: src.to_string(),
            reason,
        };
        if src.starts_with("git@") || src.ends_with(".git") {
            return Err(err("git sources are not supported".into()));
        }
        let expected = match self.spec.add.as_ref().and_then(|a| a.checksum.as_deref()) {
            None => None,
            Some(c) => {
                let hex = c.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(err(format!(
                        "--checksum={c}: expected sha256:<64 hex digits>"
                    )));
                }
                Some(format!("sha256:{}", hex.to_ascii_lowercase()))
            }
        };
        let url = reqwest::Url::parse(src).map_err(|e| err(e.to_string()))?;
        let resp = reqwest::blocking::Client::new()
            .get(url.clone())
            .send()
            .map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP status {}", resp.status())));
        }
        let header = |name: reqwest::header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mtime = header(reqwest::header::LAST_MODIFIED)
            .and_then(|d| http_date(&d))
            .map_or(stage.now(), |s| (s, 0));
        let name = file_name(
            &url,
            header(reqwest::header::CONTENT_DISPOSITION).as_deref(),
        )
        .unwrap_or_else(|| "index.html".to_string());
        let to = self.file_dest(
            stage,
            &name,
            "",
            self.spec.sources.len() + self.spec.inline.len() > 1,
        )?;
        let (uid, gid) = self.owner.unwrap_or((0, 0));
        let mode = self.chmod.as_ref().map_or(0o600, |c| c.apply(0o600, false));
        let mut body = Hashing {
            inner: resp,
            hash: Sha256::new(),
        };
        stage.put_file(
            &to,
            Meta {
                uid,
                gid,
                mode,
                mtime,
            },
            &mut body,
            None,
        )?;
        let actual = format!("sha256:{:x}", body.hash.finalize());
        if let Some(expected) = expected {
            if actual != expected {
                return Err(CopyError::Checksum {
                    url: src.to_string(),
                    expected,
                    actual,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_dates() {
        assert_eq!(http_date("Sat, 04 Mar 2017 05:06:07 GMT"), Some(1488603967));
        assert_eq!(http_date("yesterday"), None);
    }
}
