//! `--chown=user[:group]`: numbers as given, names looked up in the target
//! image's `/etc/passwd` and `/etc/group` (BuildKit's rules: a user alone
//! brings its primary group from passwd, a numeric user alone its own number
//! as group).

use super::CopyError;

/// Resolves `spec` with the target's passwd and group files (`None` when
/// the target has none, e.g. `FROM scratch`).
pub(super) fn resolve(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<(u64, u64), CopyError> {
    let err = |reason: String| CopyError::Chown {
        spec: spec.to_string(),
        reason,
    };
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(err("empty user".into()));
    }
    let (uid, primary) = match user.parse::<u64>() {
        Ok(n) => (n, n),
        Err(_) => {
            let entry = passwd.and_then(|p| find(p, user)).ok_or_else(|| {
                err(format!(
                    "unable to find user {user}: no matching entries in passwd file"
                ))
            })?;
            let id = |i: usize| entry.get(i).and_then(|s| s.parse::<u64>().ok());
            match (id(2), id(3)) {
                (Some(u), Some(g)) => (u, g),
                _ => return Err(err(format!("invalid passwd entry for user {user}"))),
            }
        }
    };
    let gid = match grp {
        None => primary,
        Some("") => return Err(err("empty group".into())),
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => group
                .and_then(|f| find(f, g))
                .and_then(|e| e.get(2).and_then(|s| s.parse::<u64>().ok()))
                .ok_or_else(|| {
                    err(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        },
    };
    Ok((uid, gid))
}

/// The `:`-separated fields of the line whose first field is `name`.
fn find<'a>(file: &'a str, name: &str) -> Option<Vec<&'a str>> {
    file.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nuser:x:1000:1001::/home/user:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:\n";

    #[test]
    fn numbers_and_names() {
        let r = |s| resolve(s, Some(PASSWD), Some(GROUP));
        assert_eq!(r("1000").unwrap(), (1000, 1000));
        assert_eq!(r("user").unwrap(), (1000, 1001));
        assert_eq!(r("user:users").unwrap(), (1000, 100));
        assert_eq!(r("5:7").unwrap(), (5, 7));
        assert_eq!(r("0:users").unwrap(), (0, 100));
        let e = r("nobody").unwrap_err().to_string();
        assert!(e.contains("unable to find user nobody"), "{e}");
        let e = r("user:wheel").unwrap_err().to_string();
        assert!(e.contains("unable to find group wheel"), "{e}");
        assert!(resolve("user", None, None).is_err());
        assert_eq!(resolve("7", None, None).unwrap(), (7, 7));
    }
}
