//! The groups' calling policies as they stand: set from the config file, replaced when
//! it is reloaded, changed through the admin API, read at each join.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use protocol::policy::valid_group_name;
use protocol::{DEFAULT_GROUP, Policy};

/// Why a set of groups, or a change to one, is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("group name {0:?} is not 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("the default group cannot be removed (set its policy instead)")]
    DefaultRemoved,
    #[error("max_participants must be at least 1")]
    NoRoom,
}

/// What a change to the groups does, told to whoever applies it to calls in progress:
/// the group, and its new policy (`None`: removed).
pub type PolicyListener = Arc<dyn Fn(&str, Option<&Policy>) + Send + Sync>;

/// The groups and their policies, shared by every handler. Always has the default
/// group ([`DEFAULT_GROUP`]), which covers tokens that name none.
#[derive(Clone)]
pub struct Policies {
    groups: Arc<RwLock<BTreeMap<String, Policy>>>,
    /// Told of every change, after it is made.
    listener: Option<PolicyListener>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.all()).finish()
    }
}

impl Default for Policies {
    /// Only the default group, which allows what tokens grant.
    fn default() -> Self {
        Policies {
            groups: Arc::new(RwLock::new(BTreeMap::from([(
                DEFAULT_GROUP.to_owned(),
                Policy::default(),
            )]))),
            listener: None,
        }
    }
}

impl Policies {
    /// These groups, checked, with the default group added where they lack it.
    pub fn new(groups: BTreeMap<String, Policy>) -> Result<Policies, PolicyError> {
        let policies = Policies::default();
        *policies.write() = checked(groups)?;
        Ok(policies)
    }

    /// The same groups, with `listener` told of every change from now on.
    pub fn with_listener(mut self, listener: PolicyListener) -> Policies {
        self.listener = Some(listener);
        self
    }

    /// Replaces every group (a reloaded config file); the listener hears of each group
    /// added, changed or removed. Returns how many changed.
    pub fn replace(&self, groups: BTreeMap<String, Policy>) -> Result<usize, PolicyError> {
        let new = checked(groups)?;
        let old = std::mem::replace(&mut *self.write(), new.clone());
        let mut changes = 0;
        for (group, policy) in &new {
            if old.get(group) != Some(policy) {
                self.tell(group, Some(policy));
                changes += 1;
            }
        }
        for group in old.keys().filter(|g| !new.contains_key(*g)) {
            self.tell(group, None);
            changes += 1;
        }
        Ok(changes)
    }

    /// Sets one group's policy (`None` removes the group); says whether that changed
    /// anything. The listener hears of a change.
    pub fn set(&self, group: &str, policy: Option<Policy>) -> Result<bool, PolicyError> {
        if !valid_group_name(group) {
            return Err(PolicyError::BadName(group.to_owned()));
        }
        if let Some(p) = &policy {
            check(p)?;
        }
        let changed = {
            let mut groups = self.write();
            match policy {
                Some(p) => groups.insert(group.to_owned(), p) != Some(p),
                None if group == DEFAULT_GROUP => return Err(PolicyError::DefaultRemoved),
                None => groups.remove(group).is_some(),
            }
        };
        if changed {
            self.tell(group, policy.as_ref());
        }
        Ok(changed)
    }

    /// The group a token names (the default group if none) and its policy; `None` for a
    /// group the server does not have.
    pub fn of(&self, group: Option<&str>) -> Option<(String, Policy)> {
        let group = group.unwrap_or(DEFAULT_GROUP);
        let policy = *self.read().get(group)?;
        Some((group.to_owned(), policy))
    }

    /// Every group and its policy, by name.
    pub fn all(&self) -> BTreeMap<String, Policy> {
        self.read().clone()
    }

    fn tell(&self, group: &str, policy: Option<&Policy>) {
        if let Some(listener) = &self.listener {
            listener(group, policy);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Policy>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map itself
        // is always whole (every write replaces or inserts at once).
        self.groups.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Policy>> {
        self.groups.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn checked(mut groups: BTreeMap<String, Policy>) -> Result<BTreeMap<String, Policy>, PolicyError> {
    for (name, policy) in &groups {
        if !valid_group_name(name) {
            return Err(PolicyError::BadName(name.clone()));
        }
        check(policy)?;
    }
    groups.entry(DEFAULT_GROUP.to_owned()).or_default();
    Ok(groups)
}

fn check(policy: &Policy) -> Result<(), PolicyError> {
    if policy.max_participants == Some(0) {
        return Err(PolicyError::NoRoom);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn audio_only() -> Policy {
        Policy {
            video: false,
            ..Policy::default()
        }
    }

    #[test]
    fn the_default_group_is_always_there() {
        let p = Policies::new(BTreeMap::from([("audio".into(), audio_only())])).unwrap();
        assert_eq!(p.of(None), Some((DEFAULT_GROUP.into(), Policy::default())));
        assert_eq!(p.of(Some("audio")).map(|x| x.1), Some(audio_only()));
        assert_eq!(p.of(Some("nobody")), None);
        assert_eq!(p.set(DEFAULT_GROUP, None), Err(PolicyError::DefaultRemoved));
        assert!(matches!(
            Policies::new(BTreeMap::from([("a b".into(), Policy::default())])),
            Err(PolicyError::BadName(_))
        ));
    }

    #[test]
    fn the_listener_hears_each_change_once() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let log = heard.clone();
        let p = Policies::new(BTreeMap::from([("audio".into(), audio_only())]))
            .unwrap()
            .with_listener(Arc::new(move |g: &str, policy: Option<&Policy>| {
                log.lock().unwrap().push((g.to_owned(), policy.copied()));
            }));
        assert_eq!(p.set("audio", Some(audio_only())), Ok(false));
        assert_eq!(p.set("tcp", Some(Policy::default())), Ok(true));
        let zero = Policy {
            max_participants: Some(0),
            ..Policy::default()
        };
        assert_eq!(p.set("tcp", Some(zero)), Err(PolicyError::NoRoom));
        // Reload: audio changed, tcp gone, default unchanged.
        let changes = p
            .replace(BTreeMap::from([("audio".into(), Policy::default())]))
            .unwrap();
        assert_eq!(changes, 2);
        assert_eq!(
            *heard.lock().unwrap(),
            vec![
                ("tcp".into(), Some(Policy::default())),
                ("audio".into(), Some(Policy::default())),
                ("tcp".into(), None),
            ]
        );
    }
}
