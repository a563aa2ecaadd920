//! Synthetic talking-head videos with exact ground truth: the embedded default data of
//! fabnet.
//!
//! A parametric 3D head (deformable skin mesh, eyeballs, eyelids, ears, hair, neck) is
//! rasterised with a z-buffer under a perspective camera and shaded per pixel (Lambert plus
//! ambient) with 2× supersampling. Every frame comes with its 68 iBUG landmarks and their
//! visibility, the 5 MAFL points, the head pose (see [`Pose`] for the sign convention), the
//! action-unit intensities and a face box. [`render_corpus`] writes mp4 videos with
//! VoxCeleb2-style track files plus probe sets in 300-W, MAFL, AFLW-like and EmotioNet-like
//! formats (see [`corpus`] and [`formats`]).
//!
//! ```no_run
//! use fabnet_synth::{render_frame, FrameParams, Head, IdentityParams};
//! let head = Head::new(&IdentityParams::from_seed(0, 0));
//! let (image, truth) = render_frame(&head, &FrameParams::frontal(), 128);
//! assert_eq!(truth.landmarks.len(), 68);
//! # let _ = image;
//! ```

pub mod corpus;
pub mod dynamics;
pub mod encode;
pub mod error;
pub mod formats;
pub mod head;
pub mod identity;
pub mod math;
pub mod render;
pub mod scene;
mod seeds;

pub use corpus::{render_corpus, Progress, Summary, SynthConfig};
pub use dynamics::ClipPlan;
pub use error::{Result, SynthError};
pub use head::{Head, Part, NUM_LANDMARKS};
pub use identity::IdentityParams;
pub use render::{render_frame, FrameTruth, Renderer};
pub use scene::{Background, Expression, FrameParams, Lighting, Pose, AU_NUMBERS, NUM_AUS};
