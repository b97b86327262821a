//! Roles from claims: each issuer says where its roles live (JSON Pointers) and how its values
//! map to tracegate's roles.

use std::collections::BTreeSet;

use serde_json::Value;

use super::config::RolesConfig;
use super::principal::Role;

/// The roles found, and the pointers whose claim had the wrong shape (reported to the audit).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RoleLookup {
    pub roles: BTreeSet<Role>,
    pub malformed: Vec<String>,
}

/// Reads roles from `claims`. A claim that is absent gives nothing; one that is neither an array
/// of strings nor a string gives nothing and is named in `malformed`.
pub fn roles_from_claims(claims: &Value, config: &RolesConfig) -> RoleLookup {
    let mut out = RoleLookup::default();
    for pointer in &config.claims {
        let values: Vec<&str> = match claims.pointer(pointer) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.split_whitespace().collect(),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items.iter().filter_map(Value::as_str).collect(),
            Some(_) => {
                out.malformed.push(pointer.clone());
                continue;
            }
        };
        for value in values {
            if let Some(role) = map_value(value, config) {
                out.roles.insert(role);
            }
        }
    }
    out
}

fn map_value(value: &str, config: &RolesConfig) -> Option<Role> {
    if config.map.is_empty() {
        return match value {
            "support" => Some(Role::Support),
            "admin" => Some(Role::Admin),
            "service" => Some(Role::Service),
            _ => None,
        };
    }
    config.map.get(value).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(claims: &[&str], map: &[(&str, Role)]) -> RolesConfig {
        RolesConfig { claims: claims.iter().map(|s| s.to_string()).collect(), map: map.iter().map(|(k, v)| (k.to_string(), *v)).collect() }
    }

    #[test]
    fn keycloak_entra_okta_auth0_shapes() {
        let keycloak = json!({"realm_access": {"roles": ["offline_access", "tg-support"]},
                              "resource_access": {"tracegate": {"roles": ["tg-admin"]}}});
        let c = config(
            &["/realm_access/roles", "/resource_access/tracegate/roles"],
            &[("tg-support", Role::Support), ("tg-admin", Role::Admin)],
        );
        assert_eq!(roles_from_claims(&keycloak, &c).roles, BTreeSet::from([Role::Support, Role::Admin]));

        let entra = json!({"roles": ["Tracegate.Admin"]});
        assert_eq!(
            roles_from_claims(&entra, &config(&["/roles"], &[("Tracegate.Admin", Role::Admin)])).roles,
            BTreeSet::from([Role::Admin])
        );

        let okta = json!({"groups": "everyone support"});
        assert_eq!(roles_from_claims(&okta, &config(&["/groups"], &[])).roles, BTreeSet::from([Role::Support]));

        let auth0 = json!({"https://shop.example/roles": ["service"]});
        let c = config(&["/https:~1~1shop.example~1roles"], &[]);
        assert_eq!(roles_from_claims(&auth0, &c).roles, BTreeSet::from([Role::Service]));
    }

    #[test]
    fn a_claim_of_the_wrong_shape_gives_no_roles() {
        let claims = json!({"roles": {"admin": true}, "groups": ["admin", 7]});
        let found = roles_from_claims(&claims, &config(&["/roles", "/groups"], &[]));
        assert!(found.roles.is_empty());
        assert_eq!(found.malformed, vec!["/roles".to_string(), "/groups".to_string()]);
    }
}
