//! Video → face-track frames for FAb-Net: decoding through video-rs/FFmpeg, VoxCeleb1/2
//! face-track files, the square-crop recipe, and a resumable, parallel extractor that writes
//! `IDENTITY/VIDEO/TRACK/frameNNNNNN.jpg` folders with a manifest per track.
//!
//! The pieces are usable on their own: [`VideoDecoder`] yields RGB8 [`Frame`]s, [`TrackFile`]
//! parses track files, [`resample`] cuts a [`Window`] to any size, and [`extract::run`] drives a
//! whole [`layout::Plan`].

pub mod crop;
pub mod decode;
pub mod encode;
pub mod extract;
pub mod jpeg;
pub mod layout;
pub mod track;

pub use crop::{footprint, resample, Filter, Window};
pub use decode::{DecodeOptions, Frame, Region, VideoDecoder, VideoError, VideoInfo};
pub use encode::{VideoWriter, WriteError};
pub use extract::{
    ExtractConfig, ExtractError, ImageFormat, RunOptions, Sampling, Summary, TrackManifest,
};
pub use jpeg::{encode_jpeg, JpegEncoder};
pub use layout::{plan_face_videos, plan_tracked, Plan, VideoJob};
pub use track::{BoxUnit, PixelBox, TrackBox, TrackError, TrackFile, UnitChoice};
