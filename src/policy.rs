//! Cedar policies evaluated in the proxy, on the entities Amazon Verified Permissions (AVP) builds
//! from a Cognito identity source, so that a policy store moves between AVP and jwtgate unchanged:
//!
//! - principal `NS::User::"<userPoolId>|<sub>"`, each `cognito:groups` entry a parent
//!   `NS::UserGroup::"<userPoolId>|<group>"`;
//! - an ID token's claims are the principal's attributes (under their token names, so
//!   `principal["custom:tenant"]`); an access token's claims are `context.token`, its `scope` a
//!   set of strings;
//! - action `NS::Action::"<lower-case method> <route path template>"` (AVP's API-linked stores:
//!   `get /pets/{petId}`), resource `NS::Application::"<application>"`;
//! - `context.pathParameters` and `context.queryStringParameters`, as AVP's generated API Gateway
//!   authorizer passes them (records of strings, present when not empty).
//!
//! Policies are indexed by the action they name at load time; decisions are cached per (token,
//! action, resource, path parameters, query) until the token expires.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicySet, PrincipalConstraint, Request, RestrictedExpression, Schema,
};
use serde_json::Value;

use crate::routes::Captures;
use crate::token::Claims;

/// Default `cache_entries` of a policy set: decisions kept per set.
pub const DEFAULT_CACHE_ENTRIES: u64 = 10_000;

/// The entity type names of a policy store's namespace.
#[derive(Debug, Clone)]
pub struct Types {
    user: EntityTypeName,
    group: EntityTypeName,
    action: EntityTypeName,
}

impl Types {
    /// `NS::User`, `NS::UserGroup`, `NS::Action` and `NS::Application` for `namespace` (no
    /// prefix when empty). `None` if the namespace is not a Cedar name.
    pub fn new(namespace: &str) -> Option<(Types, EntityTypeName)> {
        let name = |ty: &str| {
            let full = if namespace.is_empty() {
                ty.to_owned()
            } else {
                format!("{namespace}::{ty}")
            };
            EntityTypeName::from_str(&full).ok()
        };
        Some((
            Types {
                user: name("User")?,
                group: name("UserGroup")?,
                action: name("Action")?,
            },
            name("Application")?,
        ))
    }
}

/// The decision on one request, and why.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Whether Cedar allowed it.
    pub allowed: bool,
    /// The ids of the policies that decided it: the `permit`s that allowed it, or the `forbid`s
    /// that denied it (none when nothing permitted it).
    pub determining: Vec<Arc<str>>,
    /// Policies that failed to evaluate (skipped, as Cedar and AVP do), or why no evaluation
    /// took place at all (then the request is denied).
    pub errors: Vec<String>,
    /// When the token the decision was made for expires (a cached verdict never outlives it).
    expires: Option<Instant>,
}

impl Verdict {
    fn deny(error: String) -> Self {
        Verdict {
            allowed: false,
            determining: Vec::new(),
            errors: vec![error],
            expires: None,
        }
    }
}

/// A compiled policy set (`[policies]` or one `[[policy_sets]]`): what a route with
/// `policy = …` is judged by.
pub struct PolicyStore {
    /// `default` for `[policies]`, else the `[[policy_sets]]` name.
    pub name: Arc<str>,
    /// The namespace of the entity types (`PetStore`), possibly empty.
    pub namespace: String,
    types: Types,
    resource: EntityUid,
    schema: Option<Schema>,
    /// The attributes the schema declares for the user type; `None` without a schema (every
    /// claim is an attribute then).
    user_attributes: Option<HashSet<String>>,
    /// Per action id named by some policy: the policies that may apply to it.
    by_action: HashMap<String, Slices>,
    /// The policies that may apply to an action no policy names (unscoped or `action in`).
    other_actions: Slices,
    /// The policy set of one action for one set of principal-scope entities the caller is or is
    /// in (its user, its groups): built on first use, then shared.
    sliced: moka::sync::Cache<(String, Vec<EntityUid>), Arc<PolicySet>>,
    /// Every policy, with its id (the `@id` annotation or `file#index`).
    pub policies: PolicySet,
    /// The policy files and schema as configured, relative names resolved (wildcards kept):
    /// hot reload expands and reads them again.
    pub files: Vec<PathBuf>,
    /// Cached verdicts, keyed by a digest of the token and the request's inputs.
    cache: Option<moka::sync::Cache<[u8; 32], Arc<Verdict>>>,
    authorizer: Authorizer,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("policies", &self.policies.policies().count())
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// The policies that may apply to one action, with the entities their principal scopes name
/// (`principal in NS::UserGroup::"…"`, `principal == …`): a policy naming an entity the caller
/// is not and is not in cannot apply, so it is not evaluated (Cedar would skip it anyway).
struct Slices {
    /// Each policy with the entity its principal scope names, if any.
    policies: Vec<(cedar_policy::Policy, Option<EntityUid>)>,
    /// Every entity some principal scope names.
    scoped: HashSet<EntityUid>,
    /// Every policy: the set when no policy is scoped to an entity.
    all: Arc<PolicySet>,
}

impl Slices {
    fn new(policies: Vec<cedar_policy::Policy>) -> Option<Self> {
        let all = Arc::new(PolicySet::from_policies(policies.iter().cloned()).ok()?);
        let policies: Vec<_> = policies
            .into_iter()
            .map(|p| {
                let entity = scope_entity(&p);
                (p, entity)
            })
            .collect();
        let scoped = policies.iter().filter_map(|(_, e)| e.clone()).collect();
        Some(Slices {
            policies,
            scoped,
            all,
        })
    }

    /// The policies for a caller who is or is in exactly `relevant` (of `scoped`).
    fn set(&self, relevant: &[EntityUid]) -> PolicySet {
        let keep = self
            .policies
            .iter()
            .filter(|(_, e)| e.as_ref().is_none_or(|e| relevant.contains(e)))
            .map(|(p, _)| p.clone());
        // Ids are unique in the store: a subset cannot fail to build.
        PolicySet::from_policies(keep).unwrap_or_default()
    }
}

/// The entity a policy's principal scope requires the principal to be or be in.
fn scope_entity(policy: &cedar_policy::Policy) -> Option<EntityUid> {
    match policy.principal_constraint() {
        PrincipalConstraint::In(e)
        | PrincipalConstraint::Eq(e)
        | PrincipalConstraint::IsIn(_, e) => Some(e),
        PrincipalConstraint::Any | PrincipalConstraint::Is(_) => None,
    }
}

/// What a store is built from (compile checks each part).
pub struct StoreParts {
    /// The store's name.
    pub name: Arc<str>,
    /// Namespace of the entity types.
    pub namespace: String,
    /// The resource's entity id (`NS::Application::"<application>"`).
    pub application: String,
    /// Every policy, ids assigned.
    pub policies: PolicySet,
    /// The schema, when one is configured.
    pub schema: Option<Schema>,
    /// Attributes the schema declares for `NS::User`.
    pub user_attributes: Option<HashSet<String>>,
    /// The configured files (wildcards kept).
    pub files: Vec<PathBuf>,
    /// Most cached decisions; 0 disables the cache.
    pub cache_entries: u64,
}

/// One request's inputs to a policy decision.
pub struct Asked<'a> {
    /// The caller's verified claims.
    pub claims: &'a Claims,
    /// A key identifying the token for the decision cache (its payload as sent); `None`
    /// disables caching for the request.
    pub token_key: Option<&'a str>,
    /// Lower-case HTTP method.
    pub method: &'a str,
    /// The route's path template (its pattern text, `/pets/{petId}`).
    pub template: &'a str,
    /// The route's captured path parameters; one that is not UTF-8 is an evaluation error
    /// (deny).
    pub captures: Captures<'a, 'a>,
    /// The raw query string.
    pub query: Option<&'a str>,
}

/// The entities, action and context of one request, ready for Cedar.
pub struct Built {
    /// Principal, its groups (and the schema's actions).
    pub entities: Entities,
    /// The request.
    pub request: Request,
    /// The principal and its groups: which principal-scoped policies can apply.
    scope: Vec<EntityUid>,
}

/// Builds values of one representation (Cedar expressions on the hot path, JSON for
/// `authz explain`) from claims, so both show exactly the same mapping.
pub trait Build: Sized {
    /// A string.
    fn string(s: &str) -> Self;
    /// A Cedar `Long`.
    fn long(n: i64) -> Self;
    /// A boolean.
    fn boolean(b: bool) -> Self;
    /// A set.
    fn set(items: Vec<Self>) -> Self;
    /// A record.
    fn record(fields: Vec<(String, Self)>) -> Option<Self>;
}

impl Build for RestrictedExpression {
    fn string(s: &str) -> Self {
        RestrictedExpression::new_string(s.to_owned())
    }
    fn long(n: i64) -> Self {
        RestrictedExpression::new_long(n)
    }
    fn boolean(b: bool) -> Self {
        RestrictedExpression::new_bool(b)
    }
    fn set(items: Vec<Self>) -> Self {
        RestrictedExpression::new_set(items)
    }
    fn record(fields: Vec<(String, Self)>) -> Option<Self> {
        RestrictedExpression::new_record(fields).ok()
    }
}

impl Build for Value {
    fn string(s: &str) -> Self {
        Value::String(s.to_owned())
    }
    fn long(n: i64) -> Self {
        Value::from(n)
    }
    fn boolean(b: bool) -> Self {
        Value::Bool(b)
    }
    fn set(items: Vec<Self>) -> Self {
        Value::Array(items)
    }
    fn record(fields: Vec<(String, Self)>) -> Option<Self> {
        Some(Value::Object(fields.into_iter().collect()))
    }
}

/// A claim as a Cedar value: strings, integers and booleans as themselves, arrays as sets,
/// objects as records. Cedar has no floating-point numbers and no null: such a claim (or set
/// element, or record field) is left out, as AVP leaves out what it cannot type.
pub fn claim_value<B: Build>(value: &Value) -> Option<B> {
    match value {
        Value::String(s) => Some(B::string(s)),
        Value::Bool(b) => Some(B::boolean(*b)),
        Value::Number(n) => n.as_i64().map(B::long),
        Value::Array(items) => Some(B::set(items.iter().filter_map(claim_value).collect())),
        Value::Object(fields) => B::record(
            fields
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), claim_value(v)?)))
                .collect(),
        ),
        Value::Null => None,
    }
}

/// The files a configured name stands for, sorted: itself, or, when its file name holds `*`
/// or `?`, every file of its directory that matches (`*` any run of characters, `?` one).
pub fn expand(pattern: &Path) -> std::io::Result<Vec<PathBuf>> {
    let name = pattern
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![pattern.to_path_buf()]);
    }
    let dir = pattern.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let matches = entry
            .file_name()
            .to_str()
            .is_some_and(|n| wildcard(name, n));
        if matches && entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Whether `text` matches `pattern` (`*` any run of characters, `?` one character).
fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative matching with one backtrack point (the last `*`).
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        match p.get(i) {
            Some('*') => {
                star = Some(i);
                mark = j;
                i += 1;
            }
            Some(&c) if c == '?' || c == t[j] => {
                i += 1;
                j += 1;
            }
            _ => match star {
                Some(s) => {
                    i = s + 1;
                    mark += 1;
                    j = mark;
                }
                None => return false,
            },
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// The claim naming the caller's groups: parents of the principal, never an attribute.
const GROUPS_CLAIM: &str = "cognito:groups";

/// The prefix of principal and group ids: the user pool id, the last path segment of a
/// Cognito issuer (`https://cognito-idp.<region>.amazonaws.com/<region>_<id>`, or any issuer
/// whose last segment has that form, as emulators and the demo issuer do); else the issuer.
pub fn principal_prefix(iss: &str) -> &str {
    let last = iss.rsplit('/').next().unwrap_or(iss);
    let pool_like = last.split_once('_').is_some_and(|(region, id)| {
        region.contains('-')
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if pool_like { last } else { iss }
}

/// Whether the token is an ID token (its claims describe the principal) rather than an
/// access token (its claims are `context.token`).
fn is_id_token(claims: &Claims) -> bool {
    claims.token_use.as_deref() == Some("id")
}

/// The principal's attributes (ID tokens: every claim but the groups, only those the schema
/// declares when there is one) and `context.token` (access tokens: every claim but the
/// groups, `scope` as a set), in representation `B`.
pub fn token_parts<B: Build>(
    claims: &Claims,
    user_attributes: Option<&HashSet<String>>,
) -> (Vec<(String, B)>, Option<B>) {
    let fields = claims
        .all()
        .iter()
        .filter(|(name, _)| name.as_str() != GROUPS_CLAIM);
    if is_id_token(claims) {
        let attrs = fields
            .filter(|(name, _)| user_attributes.is_none_or(|declared| declared.contains(*name)))
            .filter_map(|(name, v)| Some((name.clone(), claim_value(v)?)))
            .collect();
        (attrs, None)
    } else {
        let token = fields
            .filter_map(|(name, v)| {
                let value = match (name.as_str(), v) {
                    ("scope", Value::String(s)) => B::set(
                        s.split(' ')
                            .filter(|s| !s.is_empty())
                            .map(B::string)
                            .collect(),
                    ),
                    _ => claim_value(v)?,
                };
                Some((name.clone(), value))
            })
            .collect();
        (Vec::new(), B::record(token))
    }
}

/// `key=value` pairs of a query string, decoded; a repeated key keeps its last value (as API
/// Gateway's `queryStringParameters` does).
pub fn query_parameters(query: Option<&str>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match out.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v.into_owned(),
            None => out.push((k.into_owned(), v.into_owned())),
        }
    }
    out
}

/// The context record's fields, in representation `B`: `token` (access tokens),
/// `pathParameters` and `queryStringParameters` (each when not empty). `Err` names a capture
/// that is not UTF-8.
pub fn context_fields<'a, B: Build>(
    token: Option<B>,
    captures: impl Iterator<Item = (&'a str, Option<Cow<'a, str>>)>,
    query: Option<&str>,
) -> Result<Vec<(String, B)>, String> {
    let mut fields = Vec::with_capacity(3);
    if let Some(token) = token {
        fields.push(("token".to_owned(), token));
    }
    let mut path = Vec::new();
    for (name, value) in captures {
        let value = value.ok_or_else(|| format!("path parameter {name} is not UTF-8"))?;
        path.push((name.to_owned(), B::string(&value)));
    }
    let record = |f: Vec<(String, B)>| B::record(f).ok_or("duplicate parameter name");
    if !path.is_empty() {
        fields.push(("pathParameters".to_owned(), record(path)?));
    }
    let query: Vec<(String, B)> = query_parameters(query)
        .into_iter()
        .map(|(k, v)| (k, B::string(&v)))
        .collect();
    if !query.is_empty() {
        fields.push(("queryStringParameters".to_owned(), record(query)?));
    }
    Ok(fields)
}

/// A method as AVP's action names write it: lower case (no allocation for the usual ones).
pub fn lower_method(method: &http::Method) -> Cow<'static, str> {
    use http::Method as M;
    let known = [
        (M::GET, "get"),
        (M::POST, "post"),
        (M::PUT, "put"),
        (M::DELETE, "delete"),
        (M::PATCH, "patch"),
        (M::HEAD, "head"),
        (M::OPTIONS, "options"),
    ];
    match known.iter().find(|(m, _)| m == method) {
        Some((_, word)) => Cow::Borrowed(word),
        None => Cow::Owned(method.as_str().to_ascii_lowercase()),
    }
}

/// A cached verdict lives until the token it was made for expires.
struct UntilExpiry;

impl moka::Expiry<[u8; 32], Arc<Verdict>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Verdict>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(
            value
                .expires
                .map_or(Duration::ZERO, |e| e.saturating_duration_since(created_at)),
        )
    }
}

impl PolicyStore {
    /// Indexes the policies by action and sets up the decision cache. `None` when the
    /// namespace is not a Cedar name (compile checked it).
    pub fn new(parts: StoreParts) -> Option<Self> {
        let (types, application) = Types::new(&parts.namespace)?;
        let resource =
            EntityUid::from_type_name_and_id(application, EntityId::new(&parts.application));
        let mut named: HashMap<String, Vec<cedar_policy::Policy>> = HashMap::new();
        let mut other = Vec::new();
        for policy in parts.policies.policies() {
            match policy.action_constraint() {
                ActionConstraint::Eq(action) if action.type_name() == &types.action => named
                    .entry(action.id().unescaped().to_owned())
                    .or_default()
                    .push(policy.clone()),
                // Another type's action never matches ours.
                ActionConstraint::Eq(_) => {}
                ActionConstraint::Any | ActionConstraint::In(_) => other.push(policy.clone()),
            }
        }
        let other_actions = Slices::new(other.clone())?;
        let mut by_action = HashMap::with_capacity(named.len());
        for (action, policies) in named {
            let slices = Slices::new(other.iter().cloned().chain(policies).collect())?;
            by_action.insert(action, slices);
        }
        let cache = (parts.cache_entries > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(parts.cache_entries)
                .expire_after(UntilExpiry)
                .build()
        });
        Some(PolicyStore {
            name: parts.name,
            namespace: parts.namespace,
            types,
            resource,
            schema: parts.schema,
            user_attributes: parts.user_attributes,
            by_action,
            other_actions,
            // Distinct (action, scope entities) pairs are few: the routes' actions times the
            // group combinations policies name.
            sliced: moka::sync::Cache::new(4096),
            policies: parts.policies,
            files: parts.files,
            cache,
            authorizer: Authorizer::new(),
        })
    }

    /// The action's id for a request: `get /pets/{petId}`.
    pub fn action_id(method: &str, template: &str) -> String {
        let mut id = String::with_capacity(method.len() + 1 + template.len());
        id.push_str(method);
        id.push(' ');
        id.push_str(template);
        id
    }

    /// The principal's entity id: `<userPoolId>|<sub>` (a token without `sub`, none).
    pub fn principal_id(claims: &Claims) -> Option<String> {
        let sub = claims.all().get("sub")?.as_str()?;
        Some(format!("{}|{sub}", principal_prefix(&claims.iss)))
    }

    /// The group entity ids of the caller: `<userPoolId>|<group>` for each `cognito:groups`.
    pub fn group_ids(claims: &Claims) -> Vec<String> {
        let prefix = principal_prefix(&claims.iss);
        claims
            .groups
            .iter()
            .map(|g| format!("{prefix}|{g}"))
            .collect()
    }

    /// Whether the policies were validated against a schema.
    pub fn has_schema(&self) -> bool {
        self.schema.is_some()
    }

    /// The declared attributes of the user type, when there is a schema.
    pub fn user_attributes(&self) -> Option<&HashSet<String>> {
        self.user_attributes.as_ref()
    }

    /// The entity uid of the request's action.
    pub fn action(&self, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.types.action.clone(), EntityId::new(id))
    }

    /// The resource every request names.
    pub fn resource(&self) -> &EntityUid {
        &self.resource
    }

    /// The entities and request Cedar evaluates; `Err` says why none could be built.
    pub fn build(&self, asked: &Asked<'_>, action_id: &str) -> Result<Built, String> {
        let claims = asked.claims;
        let principal_id = Self::principal_id(claims).ok_or("the token has no sub claim")?;
        let principal =
            EntityUid::from_type_name_and_id(self.types.user.clone(), EntityId::new(principal_id));
        let groups: Vec<EntityUid> = Self::group_ids(claims)
            .into_iter()
            .map(|g| EntityUid::from_type_name_and_id(self.types.group.clone(), EntityId::new(g)))
            .collect();
        let (attrs, token) =
            token_parts::<RestrictedExpression>(claims, self.user_attributes.as_ref());
        let user = Entity::new(
            principal.clone(),
            attrs.into_iter().collect(),
            groups.iter().cloned().collect(),
        )
        .map_err(|e| format!("principal: {e}"))?;
        let scope: Vec<EntityUid> = std::iter::once(principal.clone())
            .chain(groups.iter().cloned())
            .collect();
        let entities = std::iter::once(user).chain(
            groups
                .into_iter()
                .map(|g| Entity::new_no_attrs(g, HashSet::new())),
        );
        let entities = Entities::from_entities(entities, self.schema.as_ref())
            .map_err(|e| format!("entities: {e}"))?;
        let fields = context_fields(token, asked.captures.iter(), asked.query)?;
        let context = Context::from_pairs(fields).map_err(|e| format!("context: {e}"))?;
        let request = Request::new(
            principal,
            self.action(action_id),
            self.resource.clone(),
            context,
            None,
        )
        .map_err(|e| format!("request: {e}"))?;
        Ok(Built {
            entities,
            request,
            scope,
        })
    }

    /// The policies that may apply to an action: those naming it, and those not naming one.
    pub fn policies_for(&self, action_id: &str) -> &PolicySet {
        &self.slices(action_id).all
    }

    fn slices(&self, action_id: &str) -> &Slices {
        self.by_action.get(action_id).unwrap_or(&self.other_actions)
    }

    /// The policies that may apply to an action for a caller who is or is in `scope` (its user
    /// and groups): policies scoped to other principals or groups are left out.
    fn policies_in_scope(&self, action_id: &str, scope: &[EntityUid]) -> Arc<PolicySet> {
        let slices = self.slices(action_id);
        let mut relevant: Vec<EntityUid> = scope
            .iter()
            .filter(|e| slices.scoped.contains(*e))
            .cloned()
            .collect();
        relevant.sort();
        relevant.dedup();
        if relevant.len() == slices.scoped.len() {
            return Arc::clone(&slices.all);
        }
        let key = (action_id.to_owned(), relevant);
        self.sliced
            .get_with_by_ref(&key, || Arc::new(slices.set(&key.1)))
    }

    /// Evaluates built inputs (no cache).
    pub fn evaluate(&self, built: &Built, action_id: &str) -> Verdict {
        let policies = self.policies_in_scope(action_id, &built.scope);
        let response = self
            .authorizer
            .is_authorized(&built.request, &policies, &built.entities);
        let diagnostics = response.diagnostics();
        Verdict {
            allowed: response.decision() == Decision::Allow,
            determining: diagnostics
                .reason()
                .map(|id| Arc::from(id.as_ref()))
                .collect(),
            errors: diagnostics.errors().map(ToString::to_string).collect(),
            expires: None,
        }
    }

    /// The decision on a request: from the cache when the same token asked the same thing
    /// before, else evaluated (and cached until the token expires). Anything that cannot be
    /// evaluated is a deny.
    pub fn decide(&self, asked: &Asked<'_>, now_unix: i64) -> Arc<Verdict> {
        let action_id = Self::action_id(asked.method, asked.template);
        let key = match (&self.cache, asked.token_key) {
            (Some(_), Some(token)) => Some(cache_key(token, &action_id, asked)),
            _ => None,
        };
        if let (Some(cache), Some(key)) = (&self.cache, &key) {
            if let Some(hit) = cache.get(key) {
                return hit;
            }
        }
        let mut verdict = match self.build(asked, &action_id) {
            Ok(built) => self.evaluate(&built, &action_id),
            Err(e) => Verdict::deny(e),
        };
        if let (Some(cache), Some(key)) = (&self.cache, key) {
            let left = u64::try_from(asked.claims.exp.saturating_sub(now_unix)).unwrap_or(0);
            verdict.expires = Some(Instant::now() + Duration::from_secs(left));
            let verdict = Arc::new(verdict);
            if left > 0 {
                cache.insert(key, Arc::clone(&verdict));
            }
            verdict
        } else {
            Arc::new(verdict)
        }
    }
}

/// What `jwtgate authz explain` found for one request: every input Cedar saw, the decision
/// and why. `Err` when the request never reaches a policy (no route, no policy on the route,
/// an unreadable token).
pub fn explain(
    config: &crate::settings::Config,
    token: &str,
    method: &http::Method,
    uri: &str,
) -> Result<(String, bool), String> {
    use base64::Engine as _;
    use std::fmt::Write as _;
    let payload = token
        .trim()
        .split('.')
        .nth(1)
        .ok_or("the token is not a JWT (header.payload.signature)")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("token payload: {e}"))?;
    let all: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|e| format!("token payload: {e}"))?;
    let claims = Claims::from_payload(all).map_err(|e| format!("token claims: {e}"))?;
    let (path, query) =
        crate::proxy::original_target(uri, config.paths).map_err(|e| format!("{uri}: {e}"))?;
    let matched = config
        .routes
        .find(method, &path)
        .ok_or_else(|| format!("no route matches {method} {path} (404)"))?;
    let route = matched.route;
    let chosen = route
        .policy
        .as_ref()
        .ok_or_else(|| format!("route {:?} has no policy = …", &*route.name))?;
    let store = config
        .policies
        .get(chosen.set)
        .ok_or("the route's policy set is missing")?;
    let method_word = lower_method(method);
    let action_id = PolicyStore::action_id(&method_word, &chosen.template);
    let asked = Asked {
        claims: &claims,
        token_key: None,
        method: &method_word,
        template: &chosen.template,
        captures: matched.captures,
        query,
    };
    let mut out = String::new();
    let _ = writeln!(out, "route       {:?} ({})", &*route.name, chosen.template);
    let _ = writeln!(out, "policy set  {:?}", &*store.name);
    let principal = PolicyStore::principal_id(&claims).map_or_else(
        || "(none: the token has no sub claim)".to_owned(),
        |id| format!("{}::\"{id}\"", store.types.user),
    );
    let _ = writeln!(out, "principal   {principal}");
    for group in PolicyStore::group_ids(&claims) {
        let _ = writeln!(out, "  in        {}::\"{group}\"", store.types.group);
    }
    let (attrs, token) = token_parts::<Value>(&claims, store.user_attributes.as_ref());
    let attrs: serde_json::Map<String, Value> = attrs.into_iter().collect();
    let _ = writeln!(out, "  attributes {}", Value::Object(attrs));
    let _ = writeln!(out, "action      {}", store.action(&action_id));
    let _ = writeln!(out, "resource    {}", store.resource);
    let context = context_fields::<Value>(token, matched.captures.iter(), query)
        .map(|f| Value::Object(f.into_iter().collect()).to_string());
    let _ = writeln!(out, "context     {}", context.unwrap_or_else(|e| e));
    let _ = writeln!(
        out,
        "policies    {} may apply to this action",
        store.policies_for(&action_id).policies().count()
    );
    let verdict = match store.build(&asked, &action_id) {
        Ok(built) => store.evaluate(&built, &action_id),
        Err(e) => Verdict::deny(e),
    };
    let _ = writeln!(
        out,
        "decision    {}",
        if verdict.allowed {
            "ALLOW"
        } else {
            "DENY (403 policy)"
        }
    );
    let determining: Vec<&str> = verdict.determining.iter().map(|p| &**p).collect();
    let _ = writeln!(
        out,
        "determining {}",
        if determining.is_empty() {
            "none (no permit applies: default deny)".to_owned()
        } else {
            determining.join(", ")
        }
    );
    for e in &verdict.errors {
        let _ = writeln!(out, "error       {e}");
    }
    let _ = writeln!(
        out,
        "note        the token's signature, issuer and expiry were not checked, nor the route's other requirements"
    );
    Ok((out, verdict.allowed))
}

/// SHA-256 of the token and every request input a decision depends on, each
/// length-prefixed so no two different inputs share a key.
fn cache_key(token: &str, action_id: &str, asked: &Asked<'_>) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut part = |bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_le_bytes());
        ctx.update(bytes);
    };
    part(token.as_bytes());
    part(action_id.as_bytes());
    for (name, value) in asked.captures.iter() {
        part(name.as_bytes());
        part(value.as_deref().unwrap_or("\u{0}invalid").as_bytes());
    }
    part(asked.query.unwrap_or_default().as_bytes());
    let digest = ctx.finish();
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: Value) -> Claims {
        let Value::Object(map) = json else {
            panic!("an object")
        };
        Claims::from_payload(map).expect("claims")
    }

    #[test]
    fn cognito_issuers_give_the_pool_id_as_prefix() {
        assert_eq!(
            principal_prefix("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC"),
            "us-east-1_AbC"
        );
        assert_eq!(
            principal_prefix("http://127.0.0.1:9000/us-east-1_DEMO"),
            "us-east-1_DEMO"
        );
        assert_eq!(
            principal_prefix("https://idp.example/realms/x"),
            "https://idp.example/realms/x"
        );
    }

    #[test]
    fn access_token_claims_go_to_context_token_with_scope_as_a_set() {
        let c = claims(serde_json::json!({
            "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_P",
            "exp": 2_000_000_000_i64, "sub": "s1", "token_use": "access",
            "scope": "pets/read pets/write", "cognito:groups": ["admins"], "ratio": 0.5,
        }));
        let (attrs, token) = token_parts::<Value>(&c, None);
        assert!(
            attrs.is_empty(),
            "an access token gives the principal no attributes"
        );
        let token = token.expect("a record");
        assert_eq!(
            token["scope"],
            serde_json::json!(["pets/read", "pets/write"])
        );
        assert!(token.get("cognito:groups").is_none(), "groups are parents");
        assert!(token.get("ratio").is_none(), "Cedar has no floats");
        assert_eq!(PolicyStore::group_ids(&c), ["us-east-1_P|admins"]);
        assert_eq!(
            PolicyStore::principal_id(&c).as_deref(),
            Some("us-east-1_P|s1")
        );
    }

    #[test]
    fn id_token_claims_are_principal_attributes_under_their_names() {
        let c = claims(serde_json::json!({
            "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_P",
            "exp": 2_000_000_000_i64, "sub": "s1", "token_use": "id",
            "custom:tenant": "acme", "email_verified": true, "cognito:groups": ["a"],
        }));
        let (attrs, token) = token_parts::<Value>(&c, None);
        assert!(token.is_none());
        let attrs: serde_json::Map<String, Value> = attrs.into_iter().collect();
        assert_eq!(attrs["custom:tenant"], "acme");
        assert_eq!(attrs["email_verified"], true);
        assert!(!attrs.contains_key("cognito:groups"));
        let declared: HashSet<String> = ["custom:tenant".to_owned()].into();
        let (attrs, _) = token_parts::<Value>(&c, Some(&declared));
        assert_eq!(attrs.len(), 1, "only what the schema declares");
    }

    /// A compiled config with one policy route over `policies` (in a directory of its own).
    fn store_config(name: &str, policies: &str) -> crate::settings::Config {
        let dir =
            std::env::temp_dir().join(format!("jwtgate-policy-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.cedar"), policies).unwrap();
        let text = r#"
[upstream]
url = "http://127.0.0.1:3000"

[[issuers]]
issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_P"
audiences = ["client"]

[[routes]]
path = "/pets/{petId}"
policy = true

[policies]
files = ["p.cedar"]
namespace = "PetStore"
"#;
        let config = crate::compile::compile(&dir.join("j.toml").display().to_string(), text);
        let _ = std::fs::remove_dir_all(&dir);
        config.unwrap()
    }

    #[test]
    fn decisions_are_cached_per_token_and_inputs_and_never_past_the_token() {
        let config = store_config(
            "cache",
            "permit (principal, action == PetStore::Action::\"get /pets/{petId}\", resource)\n\
             when { context.pathParameters.petId == \"1\" };\n",
        );
        let store = &config.policies[0];
        let now = 1_900_000_000;
        let c = claims(serde_json::json!({
            "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_P",
            "exp": now + 60, "sub": "s1", "token_use": "access",
        }));
        let ask = |path: &str, query: Option<&str>, now: i64| {
            let matched = config.routes.find(&http::Method::GET, path).unwrap();
            let asked = Asked {
                claims: &c,
                token_key: Some("payload"),
                method: "get",
                template: "/pets/{petId}",
                captures: matched.captures,
                query,
            };
            store.decide(&asked, now).allowed
        };
        let entries = || {
            let cache = store.cache.as_ref().unwrap();
            cache.run_pending_tasks();
            cache.entry_count()
        };
        assert!(ask("/pets/1", None, now));
        assert!(!ask("/pets/2", None, now));
        assert!(ask("/pets/1", Some("a=1"), now));
        assert_eq!(
            entries(),
            3,
            "path parameters and the query are part of the key"
        );
        assert!(ask("/pets/1", None, now), "a hit gives the same answer");
        assert_eq!(entries(), 3);
        // A token at its expiry is evaluated, never cached.
        assert!(ask("/pets/1", Some("b=1"), now + 60));
        assert_eq!(entries(), 3);
    }

    #[test]
    fn a_request_that_cannot_be_evaluated_is_denied_with_the_reason() {
        let config = store_config("noeval", "permit (principal, action, resource);\n");
        let store = &config.policies[0];
        let c = claims(serde_json::json!({
            "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_P",
            "exp": 1_900_000_060_i64, "token_use": "access",
        }));
        let matched = config.routes.find(&http::Method::GET, "/pets/1").unwrap();
        let asked = Asked {
            claims: &c,
            token_key: None,
            method: "get",
            template: "/pets/{petId}",
            captures: matched.captures,
            query: None,
        };
        let verdict = store.decide(&asked, 1_900_000_000);
        assert!(!verdict.allowed, "no sub: no principal");
        assert_eq!(verdict.errors, ["the token has no sub claim"]);
    }

    #[test]
    fn policies_scoped_to_other_principals_or_groups_are_not_evaluated() {
        let config = store_config(
            "slices",
            "permit (principal, action, resource);\n\
             permit (principal in PetStore::UserGroup::\"us-east-1_P|admins\", action, resource);\n\
             permit (principal in PetStore::UserGroup::\"us-east-1_P|users\", action, resource);\n\
             forbid (principal == PetStore::User::\"us-east-1_P|s1\", action, resource);\n",
        );
        let store = &config.policies[0];
        let uid = |ty: &str, id: &str| {
            EntityUid::from_type_name_and_id(
                EntityTypeName::from_str(ty).unwrap(),
                EntityId::new(id),
            )
        };
        let user = |id: &str| uid("PetStore::User", id);
        let group = |id: &str| uid("PetStore::UserGroup", id);
        let count = |scope: &[EntityUid]| {
            store
                .policies_in_scope("get /pets/{petId}", scope)
                .policies()
                .count()
        };
        assert_eq!(count(&[user("us-east-1_P|s2")]), 1);
        assert_eq!(
            count(&[user("us-east-1_P|s2"), group("us-east-1_P|users")]),
            2
        );
        assert_eq!(
            count(&[
                user("us-east-1_P|s1"),
                group("us-east-1_P|users"),
                group("us-east-1_P|admins")
            ]),
            4
        );
        assert_eq!(
            count(&[user("us-east-1_P|s1"), group("us-east-1_P|admins")]),
            3
        );
    }

    #[test]
    fn wildcards_match_file_names() {
        assert!(wildcard("*.cedar", "pets.cedar"));
        assert!(wildcard("p?ts*.cedar", "pets-v2.cedar"));
        assert!(!wildcard("*.cedar", "pets.cedarschema"));
        assert!(wildcard("*", ""));
    }

    #[test]
    fn query_parameters_keep_the_last_value_of_a_repeated_key() {
        assert_eq!(
            query_parameters(Some("a=1&b=x%20y&a=2")),
            [("a".into(), "2".into()), ("b".into(), "x y".into())]
        );
        assert!(query_parameters(None).is_empty());
    }
}
