//! `route`: a router picks a branch for each item (or, batched, for each element of a batch);
//! each branch is a chain of stages built by a closure from the branch's input; the branches
//! join into one stream.
//!
//! ```text
//! stage.route(router)                      // Route<T>
//!      .branch("jpeg", |b| b.pipe(decode_jpeg).concurrency(4))   // Branches<T, U>
//!      .branch("png", |b| b.pipe(decode_png).pipe(fix))
//!      .join()                             // StageBuilder<U>
//! ```
//!
//! The branches' stages are started in the pipeline that holds the route: the same pools,
//! statistics (their names prefixed with `route#N[branch]/`), failure budget and stop.
//! [`lane`] holds the router's lane and the batched join.

pub(crate) mod lane;

use std::sync::{Arc, Mutex};

use crate::builder::{Chain, StageBuilder};
use crate::failure::BuildError;
use crate::launch::{Launch, LaunchFn};
use crate::queue::{Rx, Tx};
use crate::resume::ledger::Ledger;
use crate::stage::merge::lane::MergeLane;
use crate::stage::merge::{MergePolicy, OnEnd};
use crate::stage::OneLane;
use crate::stats::StageKind;
use crate::sync::lock;
use lane::{batched, per_item, BatchJoinLane, Pending, Router, RouterLane, Splitter};

/// Where a branch's input queue is handed to the router when the branch starts.
type Slot<T> = Arc<Mutex<Option<Tx<T>>>>;

/// One branch, built: its name, its launch function, and where its input goes.
struct Built<T, U> {
    name: String,
    launch: LaunchFn<U>,
    slot: Slot<T>,
}

/// A route before its first branch; see [`StageBuilder::route`].
pub struct Route<T> {
    prev: StageBuilder<T>,
    router: Router<T>,
}

/// A route with its branches so far, all producing `U`; [`join`](Self::join) ends it.
pub struct Branches<T, U> {
    prev: StageBuilder<T>,
    router: Router<T>,
    branches: Vec<Built<T, U>>,
    chains: Vec<Chain>,
}

/// A batched route before its first branch; see [`StageBuilder::route_batched`].
pub struct BatchedRoute<E> {
    prev: StageBuilder<Vec<E>>,
    router: Router<E>,
}

/// A batched route with its branches so far, all turning `Vec<E>` into `Vec<V>`;
/// [`join`](Self::join) ends it.
pub struct BatchedBranches<E, V> {
    prev: StageBuilder<Vec<E>>,
    router: Router<E>,
    branches: Vec<Built<Vec<E>, Vec<V>>>,
    chains: Vec<Chain>,
}

macro_rules! debug_route {
    ($($ty:ident<$($p:ident),*>),*) => {$(
        impl<$($p),*> std::fmt::Debug for $ty<$($p),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty)).finish_non_exhaustive()
            }
        }
    )*};
}
debug_route!(Route<T>, Branches<T, U>, BatchedRoute<E>, BatchedBranches<E, V>);

impl<T: Send + 'static> StageBuilder<T> {
    /// Routes each item to the branch `router` returns (an index into the branches, in the
    /// order they are added); add the branches with [`Route::branch`], then
    /// [`join`](Branches::join) them. The join passes items on as the branches produce them
    /// (completion order). A router that panics or returns an index out of range fails the
    /// item (counted against the pipeline's budget).
    ///
    /// ```
    /// use pipeline_runtime::PipelineBuilder;
    ///
    /// let mut out: Vec<i64> = PipelineBuilder::new()
    ///     .source(0..6i64)
    ///     .route(|x: &i64| (*x % 2) as usize)
    ///     .branch("even", |b| b.pipe(|x| x * 10).concurrency(2))
    ///     .branch("odd", |b| b.pipe(|x| -x))
    ///     .join()
    ///     .sink()
    ///     .build()?
    ///     .collect::<Result<_, _>>()?;
    /// out.sort();
    /// assert_eq!(out, [-5, -3, -1, 0, 20, 40]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn route<R>(self, router: R) -> Route<T>
    where
        R: Fn(&T) -> usize + Send + Sync + 'static,
    {
        Route {
            prev: self,
            router: Arc::new(router),
        }
    }
}

impl<E: Send + 'static> StageBuilder<Vec<E>> {
    /// Routes each element of each batch to the branch `router` returns; each branch gets
    /// the sub-batch of its elements (`Vec<E>`) and must return one element per element
    /// (`Vec<V>`), and the join puts every batch back together in its elements' order. A
    /// branch that fails or drops a sub-batch loses its whole batch. Empty batches are not
    /// passed on. Resume tracking and the memory budget follow each batch through its
    /// branches: it is resolved once its whole batch is delivered (or dropped).
    pub fn route_batched<R>(self, router: R) -> BatchedRoute<E>
    where
        R: Fn(&E) -> usize + Send + Sync + 'static,
    {
        BatchedRoute {
            prev: self,
            router: Arc::new(router),
        }
    }
}

/// Builds one branch from its input: `build` gets a builder whose items are the branch's.
fn build_branch<T: Send + 'static, U: Send + 'static>(
    name: String,
    continuous: bool,
    build: impl FnOnce(StageBuilder<T>) -> StageBuilder<U>,
) -> (Built<T, U>, Chain) {
    let slot: Slot<T> = Arc::new(Mutex::new(None));
    let handed = slot.clone();
    let input: LaunchFn<T> = Box::new(move |l: &mut Launch, cap| {
        // Named after the branch's place: `route#N[branch]/input`.
        let after = format!("{}input", l.prefix);
        let (tx, rx): (Tx<T>, Rx<T>) = l.queue_from(&after, cap, None);
        *lock(&handed) = Some(tx);
        Ok(rx)
    });
    // Counted as one stage, so that the branch's stages are numbered from 1 (`pipe#1`); the
    // route does not count it.
    let root = StageBuilder::ready(
        Chain::new(continuous, Vec::new()),
        "a branch's input",
        input,
    );
    let (launch, chain) = build(root).seal();
    (Built { name, launch, slot }, chain)
}

impl<T: Send + 'static> Route<T> {
    /// The first branch, named `name` (in statistics and errors): `build` adds its stages
    /// to the builder it is given, e.g. `|b| b.pipe(decode).concurrency(4)`.
    pub fn branch<U: Send + 'static>(
        self,
        name: impl Into<String>,
        build: impl FnOnce(StageBuilder<T>) -> StageBuilder<U>,
    ) -> Branches<T, U> {
        let (built, chain) = build_branch(name.into(), self.prev.chain.continuous, build);
        Branches {
            prev: self.prev,
            router: self.router,
            branches: vec![built],
            chains: vec![chain],
        }
    }
}

impl<T: Send + 'static, U: Send + 'static> Branches<T, U> {
    /// Another branch; it must produce the same items as the first.
    pub fn branch(
        mut self,
        name: impl Into<String>,
        build: impl FnOnce(StageBuilder<T>) -> StageBuilder<U>,
    ) -> Self {
        let (built, chain) = build_branch(name.into(), self.prev.chain.continuous, build);
        self.branches.push(built);
        self.chains.push(chain);
        self
    }

    /// Joins the branches into one stream (completion order).
    pub fn join(self) -> StageBuilder<U> {
        let names: Vec<String> = self.branches.iter().map(|b| b.name.clone()).collect();
        let splitter = per_item(self.router, names.clone());
        route_stage(
            self.prev,
            self.branches,
            self.chains,
            move |_| splitter,
            None,
            {
                move |l: &mut Launch, join: OneLane<U>, inputs| {
                    let lane = MergeLane {
                        _guard: join.guard,
                        ctx: join.ctx,
                        inputs,
                        output: join.output,
                        policy: MergePolicy::as_available(),
                        on_end: OnEnd::Continue,
                        // The branches' items carry their own tags on: nothing to record.
                        resume: None,
                    };
                    l.spawn_lane(lane.run());
                }
            },
        )
    }
}

impl<E: Send + 'static> BatchedRoute<E> {
    /// The first branch, named `name`: `build` adds its stages to the builder of the
    /// branch's sub-batches.
    pub fn branch<V: Send + 'static>(
        self,
        name: impl Into<String>,
        build: impl FnOnce(StageBuilder<Vec<E>>) -> StageBuilder<Vec<V>>,
    ) -> BatchedBranches<E, V> {
        let (built, chain) = build_branch(name.into(), self.prev.chain.continuous, build);
        BatchedBranches {
            prev: self.prev,
            router: self.router,
            branches: vec![built],
            chains: vec![chain],
        }
    }
}

impl<E: Send + 'static, V: Send + 'static> BatchedBranches<E, V> {
    /// Another branch; it must produce the same elements as the first.
    pub fn branch(
        mut self,
        name: impl Into<String>,
        build: impl FnOnce(StageBuilder<Vec<E>>) -> StageBuilder<Vec<V>>,
    ) -> Self {
        let (built, chain) = build_branch(name.into(), self.prev.chain.continuous, build);
        self.branches.push(built);
        self.chains.push(chain);
        self
    }

    /// Joins the branches: each batch comes out whole, its elements in their input order.
    pub fn join(self) -> StageBuilder<Vec<V>> {
        let names: Vec<String> = self.branches.iter().map(|b| b.name.clone()).collect();
        let pending: Pending = Arc::default();
        let router = self.router;
        let for_router = pending.clone();
        let split_names = names.clone();
        route_stage(
            self.prev,
            self.branches,
            self.chains,
            move |ledger| batched(router, split_names, for_router, ledger),
            Some(pending.clone()),
            move |l: &mut Launch, join: OneLane<Vec<V>>, inputs| {
                let lane = BatchJoinLane {
                    _guard: join.guard,
                    ctx: join.ctx,
                    inputs,
                    output: join.output,
                    pending,
                    names,
                    back: Default::default(),
                };
                l.spawn_lane(lane.run());
            },
        )
    }
}

/// The route as one stage of the chain: the router, the branches, and the join made by
/// `join`.
fn route_stage<T, U, S, J>(
    prev: StageBuilder<T>,
    branches: Vec<Built<T, U>>,
    chains: Vec<Chain>,
    splitter: S,
    batched: Option<Pending>,
    join: J,
) -> StageBuilder<U>
where
    T: Send + 'static,
    U: Send + 'static,
    S: FnOnce(Option<Arc<Ledger>>) -> Splitter<T> + Send + 'static,
    J: FnOnce(&mut Launch, OneLane<U>, Vec<Rx<U>>) + Send + 'static,
{
    let index = prev.chain.stage_count;
    prev.then(
        "a route's `join`",
        crate::builder::open::NoOptions,
        move |prev, _opts, chain| {
            let mut words = Vec::new();
            for (branch, sub) in branches.iter().zip(chains) {
                chain.errors.extend(sub.errors);
                chain.auto_bounds.extend(sub.auto_bounds);
                chain.stage_count += sub.stage_count - 1;
                words.push(format!("{}: {}", branch.name, sub.shape.join(" -> ")));
            }
            chain.shape.push(format!(
                "{}({})",
                if batched.is_some() {
                    "route batched"
                } else {
                    "route"
                },
                words.join(" | ")
            ));
            let name = format!("route#{index}");
            let launch: LaunchFn<U> = Box::new(move |l: &mut Launch, out_cap| {
                let rx = prev(l, l.queue_capacity)?;
                let router = l.stage(name.clone(), StageKind::Route, 1, l.pipeline_scope.clone());
                let capacity = l.queue_capacity;
                let outer = l.prefix.clone();
                let mut txs = Vec::with_capacity(branches.len());
                let mut outs = Vec::with_capacity(branches.len());
                // Each branch is its own path; after the join, any branch's fan-out is
                // upstream.
                let fanned_before = l.fanned_out;
                let mut fanned = fanned_before;
                for branch in branches {
                    l.prefix = format!("{outer}{name}[{}]/", branch.name);
                    l.fanned_out = fanned_before;
                    let started = (branch.launch)(l, capacity);
                    fanned |= l.fanned_out;
                    l.fanned_out = fanned;
                    l.prefix.clone_from(&outer);
                    let mut out = started?;
                    l.read_by_structure();
                    out.set_consumer();
                    outs.push(out);
                    let tx = lock(&branch.slot).take().ok_or_else(|| {
                        BuildError::new(format!(
                            "{name}: branch `{}` does not start from the builder it is given; \
                             build it from that builder (`|b| b.pipe(f)`)",
                            branch.name
                        ))
                    })?;
                    txs.push(tx);
                }
                router.lanes_starting(1);
                let lane = RouterLane {
                    _guard: router.lane_guard(),
                    ctx: router.clone(),
                    input: rx,
                    branches: txs,
                    split: splitter(l.ledger.clone()),
                    on_epoch: batched,
                };
                let (join_lane, out_rx) =
                    l.one_lane_stage(format!("{name} join"), StageKind::Route, out_cap);
                l.spawn_lane(lane.run());
                join(l, join_lane, outs);
                Ok(out_rx)
            });
            launch
        },
    )
}
