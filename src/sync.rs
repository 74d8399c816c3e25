//! One lock helper for the whole crate. A panic while a lock is held (which the code never
//! means to do) must not take every later request down with it: the data behind rethread's
//! locks stays consistent at every await-free step, so a poisoned lock is taken as it is.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
