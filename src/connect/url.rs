//! Parsing and redacting connection URLs: a raw URL as an operator writes
//! it (a password with reserved characters in it included) becomes a
//! normalized [`Url`], never echoed in an error; a database name or
//! settings join it; what is secret in it is remembered to be masked.

use std::fmt::Write as _;
use std::str::FromStr;

use ::url::Url;
use sqlx::postgres::PgConnectOptions;

use crate::config::Settings;
use crate::error::UsageError;
use crate::servers::ServerName;

/// The URL with the `tenantctl.toml` settings added as query parameters,
/// each only where the URL has none of that name (in any of the spellings
/// sqlx and libpq accept): the URL's own query wins, and an unset one
/// leaves libpq's variables (`PGSSLMODE`...) in force, as sqlx and libpq
/// both read them. Values are percent-encoded, never `+` for a space,
/// which sqlx and libpq read differently.
pub(super) fn with_settings(mut url: Url, settings: &Settings) -> Url {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const VALUE: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'/');
    let spellings = |key: &str| -> &'static [&'static str] {
        match key {
            "sslmode" => &["sslmode", "ssl-mode"],
            "sslrootcert" => &["sslrootcert", "ssl-root-cert", "ssl-ca"],
            "sslcert" => &["sslcert", "ssl-cert"],
            "sslkey" => &["sslkey", "ssl-key"],
            _ => &["pgbouncer"],
        }
    };
    let mut query = url.query().unwrap_or_default().to_owned();
    for (key, value) in settings.parameters() {
        let given = url
            .query_pairs()
            .any(|(k, _)| spellings(key).contains(&k.as_ref()));
        if given {
            continue;
        }
        if !query.is_empty() {
            query.push('&');
        }
        let _ = write!(query, "{key}={}", utf8_percent_encode(&value, VALUE));
    }
    url.set_query((!query.is_empty()).then_some(query.as_str()));
    url
}

/// Whether the URL's own query sets `sslmode` (in either spelling).
pub(super) fn has_sslmode(url: &Url) -> bool {
    url.query_pairs()
        .any(|(k, _)| k == "sslmode" || k == "ssl-mode")
}

/// Where a server's `sslmode` comes from, in the order they win.
pub(super) fn sslmode_from(url: &Url, var: &str, settings: &Settings, name: &ServerName) -> String {
    if has_sslmode(url) {
        format!("{var}'s query")
    } else if settings.sslmode.is_some() {
        format!("tenantctl.toml [servers.{name}]")
    } else if std::env::var_os("PGSSLMODE").is_some() {
        "PGSSLMODE".to_owned()
    } else {
        "sqlx's default".to_owned()
    }
}

pub(super) fn ssl_mode_name(mode: sqlx::postgres::PgSslMode) -> &'static str {
    use sqlx::postgres::PgSslMode;
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// A server's address as compared with another's: host names ignore
/// case, and loopback is one place however it is spelled (`localhost`,
/// `127.0.0.1`, `::1`), so one server reached under two spellings is
/// recognised as one.
pub(super) fn place(host: &str, port: u16) -> (String, u16) {
    let host = host.to_ascii_lowercase();
    let host = match host.as_str() {
        "localhost" | "127.0.0.1" | "::1" | "[::1]" => "localhost".to_owned(),
        _ => host,
    };
    (host, port)
}

/// `pgbouncer=true` among the URL's query parameters.
pub(super) fn is_transaction_pooled(url: &Url) -> bool {
    url.query_pairs()
        .any(|(k, v)| k == "pgbouncer" && v.eq_ignore_ascii_case("true"))
}
pub(super) fn parse_url(var: &str, raw: &str) -> Result<Url, UsageError> {
    let invalid = |why: &str| {
        UsageError(format!(
            "{var} is not a valid PostgreSQL URL ({why}); expected postgresql://user:password@host:5432"
        ))
    };
    // The url crate's error never echoes its input, so nothing secret leaks.
    let url = Url::parse(&encode_userinfo(raw.trim()).map_err(invalid)?)
        .map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(invalid(&format!(
            "scheme {:?}, expected postgres or postgresql",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    normalize(url).map_err(invalid)
}

/// Percent-encodes what a URL's userinfo cannot hold literally.
///
/// Everything between `://` and the last `@` is the user and password:
/// people paste passwords with `/`, `?`, `#` or `@` in them unencoded, and a
/// URL parser would then take the password's tail for the host, path or
/// query and show it in its errors. Encoding these characters first makes
/// such a URL mean what its writer meant, and keeps all of the userinfo
/// where redaction finds it. `%` followed by two hex digits is taken as
/// already encoded and left alone.
fn encode_userinfo(raw: &str) -> Result<String, &'static str> {
    let Some(scheme_end) = raw.find("://") else {
        return Ok(raw.to_owned());
    };
    let rest = &raw[scheme_end + 3..];
    let Some(at) = userinfo_end(rest)? else {
        return Ok(raw.to_owned());
    };
    let (userinfo, host_and_after) = (&rest[..at], &rest[at..]);
    let bytes = userinfo.as_bytes();
    let mut encoded = String::with_capacity(userinfo.len() + 8);
    for (i, c) in userinfo.char_indices() {
        let keep = c.is_ascii_alphanumeric()
            || "-._~!$&'()*+,;=:".contains(c)
            || (c == '%'
                && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit));
        if keep {
            encoded.push(c);
        } else {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(encoded, "%{b:02X}");
            }
        }
    }
    Ok(format!(
        "{}{encoded}{host_and_after}",
        &raw[..scheme_end + 3]
    ))
}

/// Where the userinfo ends: the `@` after which a host follows (name or
/// `[address]`, then an optional `:port`, a path without `@`, anything in
/// the query). A password may hold `/ ? # @` unencoded and a query may hold
/// `@`; when more than one `@` qualifies (`u:p@ss?x@host`, or
/// `u:pw@host/?app=a@b`) the URL is refused rather than guessed at: a wrong
/// guess would send the password to another host. With none qualifying,
/// the last `@` is taken, so nothing before it can show in a message.
fn userinfo_end(rest: &str) -> Result<Option<usize>, &'static str> {
    let candidates: Vec<usize> = rest
        .match_indices('@')
        .map(|(i, _)| i)
        .filter(|&i| authority_follows(&rest[i + 1..]))
        .collect();
    match candidates.as_slice() {
        [] => Ok(rest.rfind('@')),
        [only] => Ok(Some(*only)),
        _ => Err(
            "it is ambiguous where the password ends; percent-encode @, /, ? and # in the password (and @ in the query)",
        ),
    }
}

/// Whether `tail` starts like `host[:port][/path][?query][#fragment]`.
fn authority_follows(tail: &str) -> bool {
    let end = if tail.starts_with('[') {
        match tail.find(']') {
            Some(i) => i + 1,
            None => return false,
        }
    } else {
        tail.find([':', '/', '?', '#']).unwrap_or(tail.len())
    };
    let host = &tail[..end];
    let host_ok = host.starts_with('[')
        || (!host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~%".contains(c)));
    if !host_ok {
        return false;
    }
    let mut after = &tail[end..];
    if let Some(port_and_more) = after.strip_prefix(':') {
        let digits = port_and_more
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(port_and_more.len());
        if digits == 0 {
            return false;
        }
        after = &port_and_more[digits..];
    }
    if !(after.is_empty() || after.starts_with(['/', '?', '#'])) {
        return false;
    }
    let path_end = after.find(['?', '#']).unwrap_or(after.len());
    !after[..path_end].contains('@')
}

/// Moves the `password`, `user` and `dbname` query parameters that libpq
/// and sqlx accept into the URL's own parts, so that redaction (which hides
/// the userinfo password) and the "names a database" check (which reads
/// the path) see them, and a tenant URL cannot be sent elsewhere by a
/// `dbname` left in its query. The other parameters are kept exactly as
/// written, since sqlx and libpq (psql, `exec` children) decode a query
/// differently (`+` is a space to one, a plus to the other).
fn normalize(mut url: Url) -> Result<Url, &'static str> {
    use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

    let Some(query) = url.query().map(str::to_owned) else {
        return Ok(url);
    };
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let mut kept = Vec::new();
    let (mut password, mut user, mut dbname) = (None, None, None);
    for piece in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
        match decode(key).as_str() {
            "password" => password = Some(decode(value)),
            "user" => user = Some(decode(value)),
            "dbname" => dbname = Some(decode(value)),
            "sslpassword" => {
                return Err(
                    "sslpassword is not accepted in the URL: it would show wherever the URL does",
                );
            }
            _ => kept.push(piece),
        }
    }
    if password.is_none() && user.is_none() && dbname.is_none() {
        return Ok(url);
    }
    url.set_query((!kept.is_empty()).then(|| kept.join("&")).as_deref());
    // Encoded here: the url crate leaves `%` alone, so a literal `%41` in a
    // password would otherwise be read back as `A`.
    if let Some(user) = user {
        url.set_username(&utf8_percent_encode(&user, NON_ALPHANUMERIC).to_string())
            .map_err(|()| "cannot set the user")?;
    }
    if let Some(password) = password {
        url.set_password(Some(
            &utf8_percent_encode(&password, NON_ALPHANUMERIC).to_string(),
        ))
        .map_err(|()| "cannot set the password")?;
    }
    if let Some(dbname) = dbname {
        if url.path().trim_matches('/').is_empty() {
            url.set_path(&format!(
                "/{}",
                utf8_percent_encode(&dbname, NON_ALPHANUMERIC)
            ));
        } else {
            return Err("both a path and a dbname parameter name a database");
        }
    }
    Ok(url)
}

pub(super) fn options_from(url: &Url) -> Result<PgConnectOptions, UsageError> {
    PgConnectOptions::from_str(url.as_str())
        .map_err(|e| UsageError(format!("{}: {e}", redact(url))))
}

pub(super) fn url_database(url: &Url) -> Option<String> {
    let path = url.path().trim_matches('/');
    (!path.is_empty()).then(|| {
        percent_encoding::percent_decode_str(path)
            .decode_utf8_lossy()
            .into_owned()
    })
}

pub(super) fn with_database(base: &Url, db: &str) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("/{db}"));
    url
}

/// The URL's scheme, credentials and host only, for examples in messages.
pub(super) fn server_root(url: &Url) -> Url {
    let mut root = with_database(url, "");
    root.set_query(None);
    root.set_fragment(None);
    root
}

/// Keeps a parsed URL's password (decoded) and its user and host.
pub(super) fn remember_secrets(url: &Url, passwords: &mut Vec<String>, words: &mut Vec<String>) {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    if let Some(password) = url.password() {
        passwords.push(decode(password));
    }
    words.push(decode(url.username()));
    words.extend(url.host_str().map(str::to_owned));
}

/// The password (decoded) in a value that reads as a URL with one, of any
/// scheme, however its userinfo is spelled; `None` for anything else.
/// For variables a child must not inherit, whose passwords are then
/// masked too.
pub fn url_password(raw: &str) -> Option<String> {
    let url = Url::parse(&encode_userinfo(raw.trim()).ok()?).ok()?;
    // `?password=` counts too; a URL normalize refuses keeps its own.
    let url = normalize(url.clone()).unwrap_or(url);
    url.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    })
}

/// The URL with its password replaced by `***`.
pub fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have credentials, which a
        // postgres URL with a host always can.
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::connect::Connector;
    use crate::dbname::DbName;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn tenant_url_keeps_query_and_encoded_credentials() {
        let c = Connector::new(
            "postgres://us%40r:p%2Fss@db.internal:6543/?sslmode=require",
            None,
            T,
        )
        .expect("valid");
        let db = DbName::parse("tenant_acme").expect("valid");
        let url = c.tenant_url(&ServerName::default(), &db).expect("tenant");
        assert_eq!(
            url.as_str(),
            "postgres://us%40r:p%2Fss@db.internal:6543/tenant_acme?sslmode=require"
        );
        assert_eq!(
            c.tenant_url_redacted(&ServerName::default(), &db)
                .expect("tenant"),
            "postgres://us%40r:***@db.internal:6543/tenant_acme?sslmode=require"
        );
        let options = c.for_tenant(&ServerName::default(), &db).expect("tenant");
        assert_eq!(options.get_database(), Some("tenant_acme"));
        assert_eq!(options.get_username(), "us@r");
    }

    #[test]
    fn trailing_slash_is_fine_and_database_is_rejected() {
        assert!(Connector::new("postgresql://u:secret@localhost:5432/", None, T).is_ok());
        let err = Connector::new("postgresql://u:secret@localhost:5432/app", None, T)
            .expect_err("names a database");
        assert!(err.0.contains("names a database"), "{}", err.0);
        assert!(!err.0.contains("secret"), "{}", err.0);
    }

    #[test]
    fn malformed_urls_are_rejected_without_echoing_them() {
        for bad in [
            "",
            "localhost:5432",
            "mysql://u:secret@h/",
            "postgres://u:secret@:5432",
        ] {
            let err = Connector::new(bad, None, T).expect_err(bad);
            assert!(!err.0.contains("secret"), "{}", err.0);
        }
    }

    #[test]
    fn query_parameters_cannot_carry_secrets_or_databases_past_the_checks() {
        let err = Connector::new("postgresql://u@h:1/?password=s3cret&dbname=app", None, T)
            .expect_err("dbname names a database");
        assert!(err.0.contains("names a database"), "{}", err.0);
        assert!(!err.0.contains("s3cret"), "{}", err.0);

        let c = Connector::new(
            "postgresql://h:1/?user=bob&password=s3cret&sslmode=require",
            None,
            T,
        )
        .expect("valid");
        let db = DbName::parse("tenant_a").expect("valid");
        assert_eq!(
            c.tenant_url_redacted(&ServerName::default(), &db)
                .expect("tenant"),
            "postgresql://bob:***@h:1/tenant_a?sslmode=require"
        );
        let (url, password) = c
            .tenant_url_split(&ServerName::default(), &db)
            .expect("tenant");
        assert_eq!(password.as_deref(), Some("s3cret"));
        assert!(!url.as_str().contains("s3cret"));

        let c = Connector::new(
            "postgresql://u:p@h:1",
            Some("postgresql://u:p@h:1/?dbname=main"),
            T,
        )
        .expect("valid");
        assert_eq!(c.master_db().as_str(), "main");

        // A literal `%41` in a password stays `%41`; other parameters are
        // kept exactly as written.
        let c = Connector::new(
            "postgresql://h:1/?options=-c%20search_path%3Dx&password=ab%2541",
            None,
            T,
        )
        .expect("valid");
        let (url, password) = c
            .tenant_url_split(&ServerName::default(), &db)
            .expect("tenant");
        assert_eq!(password.as_deref(), Some("ab%41"));
        assert_eq!(url.query(), Some("options=-c%20search_path%3Dx"));
        let options = c.for_tenant(&ServerName::default(), &db).expect("tenant");
        assert_eq!(options.get_database(), Some("tenant_a"));

        let err =
            Connector::new("postgresql://h:1/?sslpassword=k3y", None, T).expect_err("refused");
        assert!(
            err.0.contains("sslpassword") && !err.0.contains("k3y"),
            "{}",
            err.0
        );
    }

    #[test]
    fn reserved_characters_in_a_raw_password_stay_in_the_password() {
        for (raw, user, password) in [
            ("postgresql://u:S3cret/Tail@db:5432", "u", "S3cret/Tail"),
            ("postgresql://u:a?b#c@db:5432/", "u", "a?b#c"),
            ("postgresql://u:p@ss@w@db", "u", "p@ss@w"),
            ("postgresql://u:p%2Fss/x@db", "u", "p/ss/x"),
            ("postgresql://us er:100%pure@db", "us er", "100%pure"),
            ("postgres://u:[x]{y}|z^@db:1", "u", "[x]{y}|z^"),
        ] {
            let c = Connector::new(raw, None, T).unwrap_or_else(|e| panic!("{raw}: {}", e.0));
            let db = DbName::parse("tenant_a").expect("valid");
            let options = c.for_tenant(&ServerName::default(), &db).expect("tenant");
            assert_eq!(options.get_host(), "db", "{raw}");
            assert_eq!(options.get_username(), user, "{raw}");
            let (_, got) = c
                .tenant_url_split(&ServerName::default(), &db)
                .expect("tenant");
            assert_eq!(got.as_deref(), Some(password), "{raw}");
            let shown = c
                .tenant_url_redacted(&ServerName::default(), &db)
                .expect("tenant");
            assert!(
                !shown.contains("Tail") && !shown.contains("pure"),
                "{shown}"
            );
        }
        // An `@` in the query could be where the password ends: refused,
        // never sent to the host after it; so is an `@` before a `?`.
        for raw in [
            "postgresql://u:pw@localhost:1/?application_name=svc@prod",
            "postgresql://u:p@ss?w#Tail@db:5/",
        ] {
            let err = Connector::new(raw, None, T).expect_err("ambiguous");
            assert!(
                err.0.contains("ambiguous") && !err.0.contains("Tail"),
                "{}",
                err.0
            );
        }
        let db = DbName::parse("tenant_a").expect("valid");
        let c = Connector::new("postgresql://u:p@ss/w@rd/Tail@db:5/", None, T).expect("valid");
        assert_eq!(
            c.for_tenant(&ServerName::default(), &db)
                .expect("tenant")
                .get_host(),
            "db"
        );
        assert_eq!(
            c.tenant_url_split(&ServerName::default(), &db)
                .expect("tenant")
                .1
                .as_deref(),
            Some("p@ss/w@rd/Tail")
        );
        // Refusals never show any of what stood before the last `@`.
        for raw in [
            "postgresql://u:S3cret/Tail@db:5432/app",
            "postgresql://u:S3cret?Tail@db:99999",
            "mysql://u:S3cret#Tail@db",
        ] {
            let err = Connector::new(raw, None, T).expect_err(raw);
            assert!(
                !err.0.contains("Tail") && !err.0.contains("S3cret"),
                "{}",
                err.0
            );
        }
    }
}
