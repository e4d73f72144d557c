//! The one table from route to permission. The guard middleware looks every
//! request up here; a route missing from the table is refused, and a test
//! fails when a route of the API or of `openapi.json` has no entry.

use super::Role;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Anyone, without credentials.
    Public,
    /// Public when `metricsPublic` is set, else a viewer.
    Metrics,
    /// At least this role.
    Role(Role),
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRule {
    pub method: &'static str,
    /// The route pattern as actix registers it (`/job/save`).
    pub path: &'static str,
    pub permission: Permission,
    /// The audit action for a mutating route (`job.save`); `None` for reads.
    pub action: Option<&'static str>,
}

const fn rule(
    method: &'static str,
    path: &'static str,
    permission: Permission,
    action: Option<&'static str>,
) -> RouteRule {
    RouteRule {
        method,
        path,
        permission,
        action,
    }
}

const VIEWER: Permission = Permission::Role(Role::Viewer);
const OPERATOR: Permission = Permission::Role(Role::Operator);
const ADMIN: Permission = Permission::Role(Role::Admin);

/// Every API route. Console files are not here: they are public reads
/// served by [`crate::http::webroot`], and hold no data.
pub const ROUTES: &[RouteRule] = &[
    rule("GET", "/healthz", Permission::Public, None),
    rule("GET", "/readyz", Permission::Public, None),
    rule("GET", "/openapi.json", Permission::Public, None),
    rule("GET", "/metrics", Permission::Metrics, None),
    rule(
        "POST",
        "/auth/login",
        Permission::Public,
        Some("auth.login"),
    ),
    rule("POST", "/auth/logout", VIEWER, Some("auth.logout")),
    rule("GET", "/auth/me", VIEWER, None),
    rule("GET", "/auth/tokens", ADMIN, None),
    rule("POST", "/auth/tokens", ADMIN, Some("token.create")),
    rule("POST", "/auth/tokens/revoke", ADMIN, Some("token.revoke")),
    rule("GET", "/audit", ADMIN, None),
    rule("POST", "/job/save", ADMIN, Some("job.save")),
    rule("POST", "/job/delete", ADMIN, Some("job.delete")),
    rule("POST", "/job/kill", OPERATOR, Some("job.kill")),
    rule("POST", "/job/run", OPERATOR, Some("job.run")),
    rule("POST", "/job/pause", OPERATOR, Some("job.pause")),
    rule("POST", "/job/resume", OPERATOR, Some("job.resume")),
    rule("GET", "/job/list", VIEWER, None),
    rule("GET", "/job/log", VIEWER, None),
    rule("GET", "/job/get", VIEWER, None),
    rule("GET", "/job/running", VIEWER, None),
    rule("GET", "/job/history", VIEWER, None),
    rule("GET", "/stats/minutes", VIEWER, None),
    // An export holds env values, which only operators and admins see.
    rule("GET", "/job/export", OPERATOR, None),
    rule("POST", "/job/import", ADMIN, Some("job.import")),
    rule("GET", "/job/table", VIEWER, None),
    rule("GET", "/overview", VIEWER, None),
    rule("GET", "/run/get", VIEWER, None),
    rule("GET", "/run/tail", VIEWER, None),
    rule("GET", "/run/notices", VIEWER, None),
    rule("GET", "/notify/targets", VIEWER, None),
    rule("POST", "/notify/test", OPERATOR, Some("notify.test")),
    rule("GET", "/worker/list", VIEWER, None),
    rule("GET", "/worker/info", VIEWER, None),
    rule("GET", "/schedule/preview", VIEWER, None),
];

/// The methods the table serves on the route `pattern` (for `Allow`).
pub fn methods_for(pattern: &str) -> Vec<&'static str> {
    ROUTES
        .iter()
        .filter(|r| r.path == pattern)
        .map(|r| r.method)
        .collect()
}

/// The rule for `method` on the route `pattern`, if the table has one.
pub fn rule_for(method: &str, pattern: &str) -> Option<&'static RouteRule> {
    ROUTES
        .iter()
        .find(|r| r.method.eq_ignore_ascii_case(method) && r.path == pattern)
}

/// What a request with `role` (or none) may do on a route with `permission`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 401: credentials are needed.
    Unauthenticated,
    /// 403: the role is too low.
    Forbidden,
}

/// The pure access decision.
pub fn decide(permission: Permission, role: Option<Role>, metrics_public: bool) -> Decision {
    let needed = match permission {
        Permission::Public => return Decision::Allow,
        Permission::Metrics if metrics_public => return Decision::Allow,
        Permission::Metrics => Role::Viewer,
        Permission::Role(role) => role,
    };
    match role {
        None => Decision::Unauthenticated,
        Some(role) if role >= needed => Decision::Allow,
        Some(_) => Decision::Forbidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        use Decision::*;
        let table = [
            (Permission::Public, None, false, Allow),
            (Permission::Metrics, None, false, Unauthenticated),
            (Permission::Metrics, None, true, Allow),
            (Permission::Metrics, Some(Role::Viewer), false, Allow),
            (VIEWER, None, false, Unauthenticated),
            (VIEWER, Some(Role::Viewer), false, Allow),
            (OPERATOR, Some(Role::Viewer), false, Forbidden),
            (OPERATOR, Some(Role::Operator), false, Allow),
            (ADMIN, Some(Role::Operator), true, Forbidden),
            (ADMIN, Some(Role::Admin), false, Allow),
        ];
        for (permission, role, public, want) in table {
            assert_eq!(
                decide(permission, role, public),
                want,
                "{permission:?} {role:?}"
            );
        }
    }

    #[test]
    fn every_mutating_route_has_an_audit_action_and_no_read_has_one() {
        for r in ROUTES {
            assert_eq!(r.method == "POST", r.action.is_some(), "{r:?}");
        }
    }

    #[test]
    fn no_route_is_listed_twice() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(!(a.method == b.method && a.path == b.path), "{a:?}");
            }
        }
    }
}
