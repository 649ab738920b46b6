//! `--chmod`: octal (`0755`, `644`) or symbolic (`u+x,go-w`, `a=rX`), the
//! forms BuildKit's Dockerfile frontend accepts. Applied to every copied
//! file and directory (symlinks keep 0777); directories the copy only
//! creates as parents are not affected.

use super::CopyError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Chmod {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Clause {
    /// Bits of `who` (u=0o4700, g=0o2070, o=0o1007).
    who: u32,
    op: char,
    /// Requested `rwxst` as masks over all classes, `X` separately.
    perms: u32,
    cond_x: bool,
}

pub(super) fn parse(spec: &str) -> Result<Chmod, CopyError> {
    let err = |reason: &str| CopyError::Chmod {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        let n = u32::from_str_radix(spec, 8).map_err(|_| err("not an octal mode"))?;
        if n > 0o7777 {
            return Err(err("mode out of range"));
        }
        return Ok(Chmod::Octal(n));
    }
    let mut clauses = Vec::new();
    for part in spec.split(',') {
        let mut chars = part.chars().peekable();
        let mut who = 0;
        while let Some(&c) = chars.peek() {
            who |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => break,
            };
            chars.next();
        }
        let implicit = who == 0;
        if implicit {
            who = 0o7777;
        }
        let mut any = false;
        while let Some(op) = chars.next() {
            if !matches!(op, '+' | '-' | '=') {
                return Err(err("expected an octal mode or [ugoa][+-=][rwxXst]"));
            }
            let mut perms = 0;
            let mut cond_x = false;
            while let Some(&c) = chars.peek() {
                match c {
                    'r' => perms |= 0o444,
                    'w' => perms |= 0o222,
                    'x' => perms |= 0o111,
                    'X' => cond_x = true,
                    's' => perms |= 0o6000,
                    't' => perms |= 0o1000,
                    '+' | '-' | '=' => break,
                    _ => return Err(err("unknown permission letter")),
                }
                chars.next();
            }
            clauses.push(Clause {
                who,
                op,
                perms,
                cond_x,
            });
            any = true;
        }
        if !any {
            return Err(err("expected an octal mode or [ugoa][+-=][rwxXst]"));
        }
    }
    Ok(Chmod::Symbolic(clauses))
}

impl Chmod {
    /// The mode of a copied entry whose source mode is `mode`.
    pub(super) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(n) => *n,
            Chmod::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for c in clauses {
                    let mut bits = c.perms;
                    if c.cond_x && (is_dir || m & 0o111 != 0) {
                        bits |= 0o111;
                    }
                    let bits = bits & c.who;
                    match c.op {
                        '+' => m |= bits,
                        '-' => m &= !bits,
                        _ => m = (m & !(c.who & 0o7777)) | bits,
                    }
                }
                m
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_symbolic() {
        assert_eq!(parse("755").unwrap().apply(0o600, false), 0o755);
        assert_eq!(parse("0640").unwrap().apply(0o777, true), 0o640);
        assert_eq!(parse("u+x").unwrap().apply(0o644, false), 0o744);
        assert_eq!(parse("go-w,u+s").unwrap().apply(0o666, false), 0o4644);
        assert_eq!(parse("a=rX").unwrap().apply(0o700, true), 0o555);
        assert_eq!(parse("a=rX").unwrap().apply(0o600, false), 0o444);
        assert_eq!(parse("+x").unwrap().apply(0o600, false), 0o711);
        assert_eq!(parse("o=").unwrap().apply(0o777, false), 0o770);
        for bad in ["", "9", "77777", "u", "z+x", "u+q"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
