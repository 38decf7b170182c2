//! [`Policy`]: the role each RPC requires, declared by each service when
//! it registers.

use std::collections::HashMap;

use crate::auth::tokens::Role;

/// Services every caller may use: probes and `grpcurl list`/`describe`.
const OPEN_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// What an RPC path requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing: health and reflection.
    Open,
    /// A token with at least this role.
    Role(Role),
}

/// RPC path → required role. A method's own rule wins over its service's;
/// a path with neither requires [`Role::Admin`] (fail closed: a service
/// that forgot to declare is not left open).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    services: HashMap<String, Role>,
    methods: HashMap<String, Role>,
}

impl Policy {
    /// Every method of `service` (its full name, `testbed.v1.QueryService`)
    /// requires `role`, unless a method says otherwise.
    pub fn service(&mut self, service: &str, role: Role) -> &mut Self {
        self.services.insert(service.to_owned(), role);
        self
    }

    /// `method` of `service` requires `role`.
    pub fn method(&mut self, service: &str, method: &str, role: Role) -> &mut Self {
        self.methods.insert(format!("/{service}/{method}"), role);
        self
    }

    /// What the RPC at `path` (`/package.Service/Method`) requires.
    pub fn requirement(&self, path: &str) -> Requirement {
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map_or("", |(service, _)| service);
        if OPEN_SERVICES.contains(&service) {
            return Requirement::Open;
        }
        if let Some(role) = self.methods.get(path) {
            return Requirement::Role(*role);
        }
        Requirement::Role(self.services.get(service).copied().unwrap_or(Role::Admin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Methods override services; health and reflection are open;
    /// anything undeclared needs admin.
    #[test]
    fn requirements() {
        let mut policy = Policy::default();
        policy
            .service("testbed.v1.SimulatorService", Role::Read)
            .method("testbed.v1.SimulatorService", "StartRun", Role::Write);
        let req = |p| policy.requirement(p);
        assert_eq!(
            req("/testbed.v1.SimulatorService/GetRun"),
            Requirement::Role(Role::Read)
        );
        assert_eq!(
            req("/testbed.v1.SimulatorService/StartRun"),
            Requirement::Role(Role::Write)
        );
        assert_eq!(req("/grpc.health.v1.Health/Check"), Requirement::Open);
        assert_eq!(
            req("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Requirement::Open
        );
        assert_eq!(req("/testbed.v1.Unknown/X"), Requirement::Role(Role::Admin));
        assert_eq!(req("garbage"), Requirement::Role(Role::Admin));
    }
}
