use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::value::{Enumerator, Object, Value};

/// This object exists for the `namespace` function.
///
/// It's special in that it behaves like a dictionary in many ways but it's the only
/// object that can be used with `{% set %}` assignments.  This is used internally
/// in the vm via downcasting.
#[derive(Debug, Default)]
pub(crate) struct Namespace {
    data: Mutex<BTreeMap<Arc<str>, Value>>,
}

impl Object for Namespace {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.data.lock().unwrap().get(some!(key.as_str())).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let data = self.data.lock().unwrap();
        let keys = data.keys().cloned().map(Value::from);
        Enumerator::Values(keys.collect())
    }
}

impl Namespace {
    pub(crate) fn set_value(&self, key: &str, value: Value) {
        self.data.lock().unwrap().insert(key.into(), value);
    }
}

/// Ladle patch: cycle breaker for namespaces, like `ClosureTracker` for closures.
///
/// `{% set ns.me = ns %}` (or any chain of namespaces and containers leading back) is
/// a reference cycle that would never be freed. Every namespace that is assigned an
/// object is registered with the state's tracker, which empties it when the state is
/// dropped. (Walking the assigned value to refuse the cycle instead would cost the size
/// of the value on every assignment, quadratic for `{% set ns.l = [ns.l] %}` in a loop;
/// jinja2 allows the cycle too.)
#[derive(Default)]
pub(crate) struct NamespaceTracker {
    namespaces: Mutex<BTreeMap<usize, Arc<Namespace>>>,
}

impl NamespaceTracker {
    /// Registers a namespace that was assigned an object (each namespace once).
    pub(crate) fn track(&self, ns: Arc<Namespace>) {
        let key = Arc::as_ptr(&ns) as usize;
        self.namespaces.lock().unwrap().entry(key).or_insert(ns);
    }
}

impl Drop for NamespaceTracker {
    fn drop(&mut self) {
        let namespaces = std::mem::take(&mut *self.namespaces.lock().unwrap());
        for ns in namespaces.values() {
            // Taken out of the lock first: dropping the values may drop other namespaces.
            let data = std::mem::take(&mut *ns.data.lock().unwrap());
            drop(data);
        }
    }
}
