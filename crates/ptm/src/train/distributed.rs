//! Data-parallel training: the processes of one run and the collective operations the trainer
//! needs of them. Every rank holds the whole model; each step, rank r computes the gradients of
//! its slice of the global batch, the sums are all-reduced (in f32 buckets), and every rank
//! takes the same optimizer step, so all keep identical parameters.
//!
//! Over MPI (the `mpi` feature; Open MPI from the system, as Horovod and torch.distributed's
//! MPI backend use): `mpirun -np N ptm ...` gives the world size and rank. One process without
//! mpirun is the ordinary run, with no collective at all.

use crate::error::Result;

/// The processes of a data-parallel run.
pub trait Collective {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Replaces `values` with their element-wise sum over all ranks.
    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()>;
    /// The same for a few f64 statistics (loss sums, target counts).
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()>;
}

impl std::fmt::Debug for dyn Collective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rank {} of {}", self.rank(), self.size())
    }
}

/// Gradients travel in buckets of this many f32 (16 MB), as DDP's bucketing bounds the
/// buffers a reduction needs at once.
pub const BUCKET: usize = 4 << 20;

/// Sums `values` over the ranks in buckets; nothing to do for one process.
pub fn all_reduce_bucketed(world: Option<&dyn Collective>, values: &mut [f32]) -> Result<()> {
    let Some(w) = world else { return Ok(()) };
    for bucket in values.chunks_mut(BUCKET) {
        w.all_reduce_sum(bucket)?;
    }
    Ok(())
}

/// Sums a few statistics over the ranks; nothing to do for one process.
pub fn all_reduce_stats(world: Option<&dyn Collective>, values: &mut [f64]) -> Result<()> {
    world.map_or(Ok(()), |w| w.all_reduce_sum_f64(values))
}

#[cfg(feature = "mpi")]
pub use self::mpi_world::MpiWorld;

#[cfg(feature = "mpi")]
mod mpi_world {
    use mpi::collective::{CommunicatorCollectives, SystemOperation};
    use mpi::topology::{Communicator, SimpleCommunicator};

    use super::Collective;
    use crate::error::{Error, Result};

    /// MPI's world communicator.
    pub struct MpiWorld {
        comm: SimpleCommunicator,
    }

    impl MpiWorld {
        /// Initialises MPI when this process was started by mpirun (Open MPI sets
        /// OMPI_COMM_WORLD_SIZE); `None` for an ordinary single-process run. Dropping the
        /// returned universe finalises MPI: keep it to the end of a successful run, and on a
        /// failure exit without dropping it, so mpirun ends the other ranks instead of waiting
        /// for this one in a collective.
        pub fn init() -> Result<Option<(mpi::environment::Universe, &'static MpiWorld)>> {
            if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_none() && std::env::var_os("PMI_SIZE").is_none() {
                return Ok(None);
            }
            let universe = mpi::initialize().ok_or_else(|| Error::invalid("MPI could not be initialised (already initialised?)"))?;
            let comm = universe.world();
            if comm.size() < 2 {
                return Ok(None);
            }
            let world: &'static MpiWorld = Box::leak(Box::new(MpiWorld { comm }));
            Ok(Some((universe, world)))
        }
    }

    impl Collective for MpiWorld {
        fn rank(&self) -> usize {
            self.comm.rank() as usize
        }

        fn size(&self) -> usize {
            self.comm.size() as usize
        }

        fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
            let send = values.to_vec();
            self.comm.all_reduce_into(&send[..], values, SystemOperation::sum());
            Ok(())
        }

        fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
            let send = values.to_vec();
            self.comm.all_reduce_into(&send[..], values, SystemOperation::sum());
            Ok(())
        }
    }
}
