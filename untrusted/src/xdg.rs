//! Where hoist keeps a user's files, by the XDG Base Directory rules: the one
//! place that reads `XDG_CONFIG_HOME`, `XDG_DATA_HOME`, `XDG_RUNTIME_DIR` and
//! `HOME` for that.
//!
//! The variables come from the environment, so they are checked as the
//! specification asks: an empty or relative value is ignored (a relative
//! `XDG_CONFIG_HOME` would make the files read depend on the working
//! directory).

use std::ffi::OsString;
use std::path::PathBuf;

/// The system-wide config file, read before the user's.
pub const SYSTEM_CONFIG: &str = "/etc/hoist/config.toml";

/// `$XDG_CONFIG_HOME`, else `~/.config`; `None` without either.
pub fn config_home() -> Option<PathBuf> {
    config_home_from(|name| std::env::var_os(name))
}

/// `$XDG_DATA_HOME`, else `~/.local/share`; `None` without either.
pub fn data_home() -> Option<PathBuf> {
    data_home_from(|name| std::env::var_os(name))
}

/// `$XDG_RUNTIME_DIR` (the session's private runtime directory); `None`
/// when unset. Callers check that it is theirs before using it: the variable
/// can be inherited across a change of user.
pub fn runtime_dir() -> Option<PathBuf> {
    runtime_dir_from(|name| std::env::var_os(name))
}

/// The config files of hoist, in the order they are read (later ones win):
/// [`SYSTEM_CONFIG`], then `<config home>/hoist/config.toml`.
pub fn config_files() -> Vec<PathBuf> {
    config_files_from(|name| std::env::var_os(name))
}

/// [`config_home`] with the environment given as a lookup function.
pub fn config_home_from(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    base_dir(&env, "XDG_CONFIG_HOME", ".config")
}

/// [`data_home`] with the environment given as a lookup function.
pub fn data_home_from(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    base_dir(&env, "XDG_DATA_HOME", ".local/share")
}

/// [`runtime_dir`] with the environment given as a lookup function.
pub fn runtime_dir_from(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    // No fallback under HOME: the spec asks for a directory that goes away
    // with the session, which nothing else guarantees.
    env("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// [`config_files`] with the environment given as a lookup function.
pub fn config_files_from(env: impl Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from(SYSTEM_CONFIG)];
    if let Some(dir) = config_home_from(env) {
        paths.push(dir.join("hoist/config.toml"));
    }
    paths
}

fn base_dir(
    env: &impl Fn(&str) -> Option<OsString>,
    variable: &str,
    under_home: &str,
) -> Option<PathBuf> {
    let absolute = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    absolute(variable).or_else(|| absolute("HOME").map(|h| h.join(under_home)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_variable_wins_over_home() {
        let e = [
            ("XDG_CONFIG_HOME", "/x/c"),
            ("XDG_DATA_HOME", "/x/d"),
            ("HOME", "/h"),
        ];
        assert_eq!(config_home_from(env(&e)), Some("/x/c".into()));
        assert_eq!(data_home_from(env(&e)), Some("/x/d".into()));
        assert_eq!(runtime_dir_from(env(&e)), None);
        let r = [("XDG_RUNTIME_DIR", "/run/user/7")];
        assert_eq!(runtime_dir_from(env(&r)), Some("/run/user/7".into()));
        assert_eq!(runtime_dir_from(env(&[("XDG_RUNTIME_DIR", "run")])), None);
        assert_eq!(
            config_files_from(env(&e)),
            vec![
                PathBuf::from("/etc/hoist/config.toml"),
                "/x/c/hoist/config.toml".into()
            ]
        );
    }

    #[test]
    fn empty_or_relative_values_fall_back_to_home() {
        for v in ["", "rel/dir"] {
            let e = [("XDG_CONFIG_HOME", v), ("XDG_DATA_HOME", v), ("HOME", "/h")];
            assert_eq!(config_home_from(env(&e)), Some("/h/.config".into()));
            assert_eq!(data_home_from(env(&e)), Some("/h/.local/share".into()));
        }
    }

    #[test]
    fn without_home_there_is_no_user_directory() {
        for e in [&[][..], &[("HOME", "")][..], &[("HOME", "relative")][..]] {
            assert_eq!(config_home_from(env(e)), None);
            assert_eq!(data_home_from(env(e)), None);
            assert_eq!(
                config_files_from(env(e)),
                vec![PathBuf::from(SYSTEM_CONFIG)]
            );
        }
    }
}
