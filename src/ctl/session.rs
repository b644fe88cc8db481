//! `otpctl login` and `logout`: the personal token (`OTPCTL_TOKEN`) plus a code sent to the team lead's own
//! phone or e-mail opens a session (docs/sign-in.md); the session token is kept in a file only its owner can
//! read (0600, in a 0700 directory), for that server, and used by every later command until it ends.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// What the session file holds.
#[derive(Serialize, Deserialize)]
struct Stored {
    server: String,
    token: String,
    expires_at: String,
}

/// The default session file: `$XDG_STATE_HOME/otpctl/session.json`, else `~/.local/state/otpctl/session.json`.
pub fn default_path() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/state")))?;
    Some(state.join("otpctl").join("session.json"))
}

/// The session kept for `server`, unless it has passed its absolute end.
pub fn load(path: &Path, server: &str) -> Option<SecretString> {
    let text = std::fs::read_to_string(path).ok()?;
    let stored: Stored = serde_json::from_str(&text).ok()?;
    let ends = chrono::DateTime::parse_from_rfc3339(&stored.expires_at).ok()?;
    (stored.server == server && ends > chrono::Utc::now()).then(|| SecretString::from(stored.token))
}

/// Keeps `token` for `server` in `path`, readable by its owner only.
pub fn save(path: &Path, server: &str, token: &SecretString, expires_at: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    let stored = Stored {
        server: server.to_owned(),
        token: token.expose_secret().to_owned(),
        expires_at: expires_at.to_owned(),
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // A file made earlier with wider permissions is narrowed before the token goes in.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(serde_json::to_string(&stored).unwrap_or_default().as_bytes())?;
    file.sync_all()
}

/// Forgets the kept session.
pub fn forget(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Asks for the code on the terminal (or reads it from standard input).
pub fn prompt_code(destination: &str) -> std::io::Result<SecretString> {
    eprint!("{destination}(으)로 보낸 인증번호 / Code sent to {destination}: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(SecretString::from(line.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_the_owners_only_and_bound_to_its_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/otpctl/session.json");
        let token = SecretString::from("otpsess_abc".to_owned());
        let later = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
        save(&path, "http://127.0.0.1:1", &token, &later).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        }
        assert_eq!(load(&path, "http://127.0.0.1:1").unwrap().expose_secret(), "otpsess_abc");
        assert!(load(&path, "http://127.0.0.1:2").is_none(), "another server's session is not used");
        let past = (chrono::Utc::now() - chrono::TimeDelta::seconds(1)).to_rfc3339();
        save(&path, "http://127.0.0.1:1", &token, &past).unwrap();
        assert!(load(&path, "http://127.0.0.1:1").is_none(), "an ended session is not offered");
        forget(&path).unwrap();
        forget(&path).unwrap();
        assert!(!path.exists());
    }
}
