//! The route table: path prefix → upstream, longest prefix wins, matching on
//! whole path segments, with optional prefix stripping.

use url::Url;

use crate::config::policy::Policy;
use crate::config::{PathPrefix, RouteConfig};

/// One route, with everything precomputed that the hot path needs.
#[derive(Debug, Clone)]
pub struct Route {
    pub index: usize,
    pub prefix: PathPrefix,
    pub upstream: Url,
    pub provider: Option<String>,
    pub strip_prefix: bool,
    /// A credential route without `allow_browsers`: requests carrying
    /// Fetch Metadata are refused ([`super::security::check_route`]).
    pub refuses_browsers: bool,
    /// `scheme://host[:port]` of the upstream.
    origin: String,
    /// The upstream's path without its trailing slash (may be empty).
    base_path: String,
    /// The upstream's path exactly as configured (used when nothing follows the prefix).
    full_base_path: String,
    /// Value for the `Host` header.
    pub authority: String,
    /// The same, ready to insert (built once, not per request).
    pub host_value: http::HeaderValue,
    /// The prefix as written, shared with logs and metrics without copying.
    pub label: std::sync::Arc<str>,
    /// `allow`: the request policy; `None` lets every request through.
    pub policy: Option<Policy>,
}

impl Route {
    pub fn new(index: usize, cfg: &RouteConfig) -> Route {
        let up = &cfg.upstream;
        let host = up.host_str().unwrap_or_default();
        let authority = match up.port() {
            Some(p) => format!("{}:{p}", host_for_authority(up)),
            None => host_for_authority(up).to_string(),
        };
        let _ = host;
        Route {
            index,
            prefix: cfg.prefix.clone(),
            upstream: up.clone(),
            provider: cfg.provider.clone(),
            strip_prefix: cfg.strip_prefix,
            refuses_browsers: cfg.provider.is_some() && !cfg.allow_browsers,
            origin: format!("{}://{}", up.scheme(), authority),
            base_path: up.path().trim_end_matches('/').to_string(),
            full_base_path: up.path().to_string(),
            host_value: http::HeaderValue::from_str(&authority)
                .expect("a parsed URL's authority is a valid header value"),
            label: std::sync::Arc::from(cfg.prefix.as_str()),
            policy: cfg.allow.clone(),
            authority,
        }
    }

    /// The upstream URI for a request path (already matched) and query.
    pub fn upstream_uri(&self, path: &str, query: Option<&str>) -> String {
        let mut uri = self.origin.clone();
        self.push_upstream_target(&mut uri, path, query);
        uri
    }

    /// The same in origin form (`/path?query`), as sent on an HTTP/1.1
    /// connection to the upstream.
    pub fn upstream_target(&self, path: &str, query: Option<&str>) -> String {
        let mut target = String::new();
        self.push_upstream_target(&mut target, path, query);
        target
    }

    /// `scheme://host[:port]` of the upstream.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether the route's policy lets `method` on `path` (the whole
    /// request path, matched by this route) through.
    pub fn allows(&self, method: &http::Method, path: &str) -> bool {
        match &self.policy {
            None => true,
            Some(policy) => policy.allows(method, self.prefix.strip(path).unwrap_or(path)),
        }
    }

    fn push_upstream_target(&self, out: &mut String, path: &str, query: Option<&str>) {
        let rest = if self.strip_prefix {
            self.prefix.strip(path).unwrap_or(path)
        } else {
            path
        };
        out.reserve(self.full_base_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
        if rest.is_empty() {
            out.push_str(&self.full_base_path);
        } else {
            out.push_str(&self.base_path);
            out.push_str(rest);
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
    }
}

fn host_for_authority(url: &Url) -> String {
    match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(h) => h.to_string(),
        None => String::new(),
    }
}

/// Routes sorted longest prefix first, so the first match is the best one.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(configs: &[RouteConfig]) -> RouteTable {
        let mut routes: Vec<Route> = configs
            .iter()
            .enumerate()
            .map(|(i, c)| Route::new(i, c))
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.depth()));
        RouteTable { routes }
    }

    pub fn lookup(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.prefix.strip(path).is_some())
    }

    /// Routes in config order.
    pub fn in_config_order(&self) -> Vec<&Route> {
        let mut v: Vec<&Route> = self.routes.iter().collect();
        v.sort_by_key(|r| r.index);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, upstream: &str, strip: bool) -> RouteConfig {
        RouteConfig {
            strip_prefix: strip,
            ..RouteConfig::pass_through(
                PathPrefix::parse(prefix).unwrap(),
                Url::parse(upstream).unwrap(),
            )
        }
    }

    #[test]
    fn whole_segments_only() {
        let p = PathPrefix::parse("/api/").unwrap();
        assert_eq!(p.strip("/api"), Some(""));
        assert_eq!(p.strip("/api/"), Some("/"));
        assert_eq!(p.strip("/api/x"), Some("/x"));
        assert_eq!(p.strip("/apix"), None);
        assert_eq!(p.strip("/ap"), None);
        assert_eq!(PathPrefix::parse("/").unwrap().strip("/x"), Some("/x"));
    }

    #[test]
    fn prefix_validation() {
        assert!(PathPrefix::parse("api").is_err());
        assert!(PathPrefix::parse("/a/../b").is_err());
        assert!(PathPrefix::parse("/_authproxy/x").is_err());
        assert!(PathPrefix::parse("/_authproxyish").is_ok());
        assert_eq!(
            PathPrefix::parse("/api/").unwrap(),
            PathPrefix::parse("/api/").unwrap()
        );
    }

    #[test]
    fn longest_prefix_wins() {
        let t = RouteTable::new(&[
            route("/", "http://127.0.0.1:1/root/", true),
            route("/api/", "http://127.0.0.1:2/", true),
            route("/api/v2/", "http://127.0.0.1:3/", true),
        ]);
        assert_eq!(t.lookup("/api/v2/x").unwrap().prefix.as_str(), "/api/v2/");
        assert_eq!(t.lookup("/api/v2").unwrap().prefix.as_str(), "/api/v2/");
        assert_eq!(t.lookup("/api/v23").unwrap().prefix.as_str(), "/api/");
        assert_eq!(t.lookup("/other").unwrap().prefix.as_str(), "/");
    }

    #[test]
    fn upstream_uri_joining() {
        let r = Route::new(0, &route("/rips/", "https://rips.example/api/", true));
        assert_eq!(
            r.upstream_uri("/rips/scans", Some("x=1")),
            "https://rips.example/api/scans?x=1"
        );
        assert_eq!(r.upstream_uri("/rips", None), "https://rips.example/api/");
        assert_eq!(r.upstream_uri("/rips/", None), "https://rips.example/api/");
        let r = Route::new(0, &route("/rips", "http://127.0.0.1:9000", false));
        assert_eq!(
            r.upstream_uri("/rips/a", None),
            "http://127.0.0.1:9000/rips/a"
        );
        assert_eq!(r.authority, "127.0.0.1:9000");
        let r = Route::new(0, &route("/v6", "http://[::1]:9000/base", true));
        assert_eq!(
            r.upstream_uri("/v6/a", Some("q")),
            "http://[::1]:9000/base/a?q"
        );
        assert_eq!(r.authority, "[::1]:9000");
    }
}
