//! Docker's USER resolved against the image's /etc/passwd and /etc/group.

/// The credentials a USER resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, as BuildKit gives a RUN step: for a user
    /// named by name, every group of /etc/group listing that name; for a
    /// numeric user (and the default, root), none.
    pub groups: Vec<u32>,
    /// The passwd entry's home, if the user has one.
    pub home: Option<String>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

/// (name, gid, members) of each well-formed /etc/group line.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`, empty = root)
/// with the contents of /etc/passwd and /etc/group (empty when missing).
/// A numeric uid without a passwd entry gets gid 0, as with Docker; a name
/// must exist.
pub fn resolve(user: &str, passwd: &str, group: &str) -> Result<Credentials, String> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|e| e.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|e| e.name == user_part)
                .ok_or_else(|| {
                    format!("unable to find user {user_part}: no matching entries in /etc/passwd")
                })?,
        ),
    };
    let uid = match &entry {
        Some(e) => e.uid,
        None => user_part
            .parse()
            .map_err(|_| format!("invalid user {user_part:?}"))?,
    };
    let gid = match group_part {
        Some(g) if !g.is_empty() => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|(name, _, _)| *name == g)
                .map(|(_, gid, _)| gid)
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in /etc/group")
                })?,
        },
        _ => entry.as_ref().map_or(0, |e| e.gid),
    };
    let mut groups = Vec::new();
    let by_name = user_part.parse::<u32>().is_err();
    if let Some(e) = entry.as_ref().filter(|_| by_name) {
        for (_, g, members) in group_entries(group) {
            if members.contains(&e.name) && !groups.contains(&g) {
                groups.push(g);
            }
        }
    }
    Ok(Credentials {
        uid,
        gid,
        groups,
        home: entry.map(|e| e.home.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\nbad line\n";
    const GROUP: &str =
        "root:x:0:\nuser:x:1000:\nwheel:x:10:user,other\naudio:x:29:other\nstaff:x:50:user\n";

    fn creds(user: &str) -> Result<Credentials, String> {
        resolve(user, PASSWD, GROUP)
    }

    #[test]
    fn empty_and_root_are_root() {
        for u in ["", "root", "0", "0:0"] {
            let c = creds(u).unwrap();
            assert_eq!((c.uid, c.gid, c.groups.clone()), (0, 0, vec![]), "{u}");
            assert_eq!(c.home.as_deref(), Some("/root"));
        }
    }

    #[test]
    fn name_gets_the_groups_listing_it() {
        let c = creds("user").unwrap();
        assert_eq!((c.uid, c.gid), (1000, 1000));
        assert_eq!(c.groups, vec![10, 50]);
        // BuildKit's fast path: a numeric user gets no supplementary groups.
        assert_eq!(creds("1000").unwrap().groups, Vec::<u32>::new());
        assert_eq!(c.home.as_deref(), Some("/home/user"));
    }

    #[test]
    fn explicit_group_by_name_or_number() {
        assert_eq!(creds("user:audio").unwrap().gid, 29);
        assert_eq!(creds("user:audio").unwrap().groups, vec![10, 50]);
        assert_eq!(creds("1000:7").unwrap().gid, 7);
    }

    #[test]
    fn unknown_numeric_uid_gets_gid_0() {
        let c = creds("4242").unwrap();
        assert_eq!(
            (c.uid, c.gid, c.groups.clone(), c.home),
            (4242, 0, vec![], None)
        );
        let c = resolve("4242:4243", "", "").unwrap();
        assert_eq!((c.uid, c.gid), (4242, 4243));
    }

    #[test]
    fn unknown_names_fail() {
        assert!(creds("nobody")
            .unwrap_err()
            .contains("unable to find user nobody"));
        assert!(creds("user:nogroup")
            .unwrap_err()
            .contains("unable to find group nogroup"));
        assert!(resolve("user", "", "").is_err());
    }
}
