//! Living with panics: a lock that a panicking thread poisoned is still usable, and a panic's
//! payload reads as a message.

use std::any::Any;
use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poison. A stage function that panics is caught and counted as a
/// failed item; the data this crate guards stays consistent across such a panic, so a
/// poisoned lock must not take the whole pipeline down with it.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The message of a panic: its `&str` or `String` payload (what `panic!` makes).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_still_usable() {
        let mutex = Mutex::new(1);
        let _ = std::panic::catch_unwind(|| {
            let _guard = mutex.lock().unwrap();
            panic!("poison it");
        });
        assert!(mutex.is_poisoned());
        *lock(&mutex) += 1;
        assert_eq!(*lock(&mutex), 2);
    }

    #[test]
    fn panic_messages_of_every_payload() {
        let message = |f: fn()| panic_message(&*std::panic::catch_unwind(f).unwrap_err());
        assert_eq!(message(|| panic!("static")), "static");
        assert_eq!(message(|| panic!("formatted {}", 7)), "formatted 7");
        assert_eq!(
            message(|| std::panic::panic_any(7u32)),
            "non-string panic payload"
        );
    }
}
