//! Building request URLs: the base URL's path kept, ids percent-encoded as one path segment.

use super::*;

/// Everything outside RFC 3986 unreserved characters (`A-Za-z0-9-._~`) is encoded.
pub(super) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `id` as ONE path segment: `/`, `?`, `#`, `%`, spaces, `@`, `+` and
/// non-ASCII (as UTF-8) are all encoded. The dot segments `.` and `..` are written `%2E`
/// (a URL parser still resolves those, so [`UrlBuilder`] refuses them).
pub fn path_segment(id: &str) -> String {
    if id == "." || id == ".." {
        return id.replace('.', "%2E");
    }
    utf8_percent_encode(id, SEGMENT).to_string()
}

/// Builds `base` + literal path parts + encoded ids, keeping the base URL's own path
/// (`https://h/prefix` + `api/v1/users` → `https://h/prefix/api/v1/users`). The base's query
/// and fragment are dropped.
#[derive(Debug, Clone)]
pub struct UrlBuilder {
    pub(super) base: Url,
    pub(super) path: String,
    pub(super) error: Option<String>,
}

impl UrlBuilder {
    pub fn new(base: &Url) -> UrlBuilder {
        UrlBuilder {
            base: base.clone(),
            path: base.path().trim_end_matches('/').to_string(),
            error: None,
        }
    }

    /// Appends a literal path written in code (`"api/v1/users"`), not encoded.
    pub fn path(mut self, literal: &str) -> UrlBuilder {
        for part in literal.split('/').filter(|p| !p.is_empty()) {
            self.path.push('/');
            self.path.push_str(part);
        }
        self
    }

    /// Appends `id` as one encoded segment. An empty id, `.` or `..` makes [`Self::build`]
    /// fail: they would address another resource.
    pub fn id(mut self, id: &str) -> UrlBuilder {
        if id.is_empty() || id == "." || id == ".." {
            self.error.get_or_insert_with(|| {
                format!("the id {id:?} cannot be used as a URL path segment")
            });
        }
        self.path.push('/');
        self.path.push_str(&path_segment(id));
        self
    }

    /// The URL, or why it cannot be built.
    pub fn build(self) -> Result<Url, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut url = self.base;
        if url.cannot_be_a_base() {
            return Err(format!("the base URL {url} cannot take a path"));
        }
        url.set_query(None);
        url.set_fragment(None);
        let wanted = if self.path.is_empty() {
            "/".to_string()
        } else {
            self.path
        };
        url.set_path(&wanted);
        if url.path() != wanted {
            return Err(format!(
                "the path {wanted:?} would be rewritten to {:?}",
                url.path()
            ));
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::http::test_support::*;

    #[test]
    fn path_segment_table() {
        let cases = [
            ("abc", "abc"),
            ("a/b", "a%2Fb"),
            ("a b", "a%20b"),
            ("ä", "%C3%A4"),
            ("%", "%25"),
            ("?#", "%3F%23"),
            ("..", "%2E%2E"),
            (".", "%2E"),
            ("a.b-c_d~e", "a.b-c_d~e"),
            ("jo+x@example.com", "jo%2Bx%40example.com"),
            ("a;b=c&d", "a%3Bb%3Dc%26d"),
        ];
        for (id, want) in cases {
            assert_eq!(path_segment(id), want, "{id:?}");
        }
    }

    #[test]
    fn url_builder_keeps_base_path_and_refuses_dot_ids() {
        let cases = [
            ("https://h.example/", "https://h.example/api/v1/users/a%2Fb"),
            ("https://h.example", "https://h.example/api/v1/users/a%2Fb"),
            (
                "https://h.example/pre/fix/",
                "https://h.example/pre/fix/api/v1/users/a%2Fb",
            ),
            (
                "https://h.example/pre?x=1#f",
                "https://h.example/pre/api/v1/users/a%2Fb",
            ),
        ];
        for (base, want) in cases {
            let base = Url::parse(base).unwrap();
            let u = UrlBuilder::new(&base)
                .path("/api/v1/users/")
                .id("a/b")
                .build()
                .unwrap();
            assert_eq!(u.as_str(), want);
        }
        let base = Url::parse("https://h.example/p/").unwrap();
        for bad in ["", ".", ".."] {
            assert!(
                UrlBuilder::new(&base)
                    .path("users")
                    .id(bad)
                    .build()
                    .is_err(),
                "{bad:?}"
            );
        }
        let u = UrlBuilder::new(&base)
            .path("users")
            .id("ä ?")
            .path("enable")
            .build()
            .unwrap();
        assert_eq!(u.as_str(), "https://h.example/p/users/%C3%A4%20%3F/enable");
        let q = Request::get(u).query("email", "a+b@x.y");
        assert_eq!(q.url.query(), Some("email=a%2Bb%40x.y"));
        assert_eq!(q.path(), "/p/users/%C3%A4%20%3F/enable");
    }
}
