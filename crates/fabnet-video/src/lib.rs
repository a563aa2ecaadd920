//! Video → face-track frames (being written).
