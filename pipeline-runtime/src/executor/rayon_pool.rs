//! Lanes on a user's `rayon::ThreadPool`, shared with the user's other rayon work.

use std::sync::Arc;

use super::task::{drop_deferred, LaneFuture, Schedule, Task};

pub(crate) struct RayonScheduler {
    pub(crate) pool: Arc<rayon::ThreadPool>,
}

impl Schedule for RayonScheduler {
    fn schedule(&self, task: Arc<Task>) {
        self.pool.spawn(move || {
            task.run();
            drop_deferred();
        });
    }
}

pub(crate) fn spawn_lane(pool: &Arc<rayon::ThreadPool>, lane: LaneFuture) {
    Task::spawn(lane, Arc::new(RayonScheduler { pool: pool.clone() }));
}
