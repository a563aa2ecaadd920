//! JPEG encoding through FFmpeg's mjpeg encoder, the one the `ffmpeg` CLI uses.
//!
//! It has SIMD DCT and colour conversion and is several times faster than the pure-Rust
//! encoder of `image`, which made JPEG writing the largest cost of extraction after decoding.
//! Quality follows FFmpeg's `-q:v` scale: 2 is best, 31 worst.

use std::cell::RefCell;

use image::RgbImage;
use video_rs::ffmpeg;
use video_rs::ffmpeg::format::Pixel;
use video_rs::ffmpeg::software::scaling::{Context as Scaler, Flags as ScalerFlags};

/// FFmpeg's `FF_QP2LAMBDA`: the lambda of quantiser scale 1.
const QP2LAMBDA: i32 = 118;

/// An mjpeg encoder for RGB images of one size and quality.
pub struct JpegEncoder {
    encoder: ffmpeg::encoder::Video,
    scaler: Scaler,
    rgb: ffmpeg::frame::Video,
    yuv: ffmpeg::frame::Video,
    key: (u32, u32, u8),
    count: i64,
}

impl JpegEncoder {
    /// An encoder for `width`×`height` images at quantiser scale `qscale` (clamped to 2..=31).
    pub fn new(width: u32, height: u32, qscale: u8) -> Result<Self, ffmpeg::Error> {
        crate::decode::init_ffmpeg();
        let qscale = qscale.clamp(2, 31);
        let codec = ffmpeg::encoder::find(ffmpeg::codec::Id::MJPEG)
            .ok_or(ffmpeg::Error::EncoderNotFound)?;
        let mut ctx = ffmpeg::codec::Context::new_with_codec(codec)
            .encoder()
            .video()?;
        ctx.set_width(width);
        ctx.set_height(height);
        ctx.set_format(Pixel::YUVJ420P);
        ctx.set_time_base((1, 25));
        ctx.set_flags(ffmpeg::codec::Flags::QSCALE);
        ctx.set_global_quality(i32::from(qscale) * QP2LAMBDA);
        let encoder = ctx.open_as(codec)?;
        let scaler = Scaler::get(
            Pixel::RGB24,
            width,
            height,
            Pixel::YUVJ420P,
            width,
            height,
            ScalerFlags::BILINEAR,
        )?;
        let mut yuv = ffmpeg::frame::Video::new(Pixel::YUVJ420P, width, height);
        // SAFETY: `yuv` owns a valid AVFrame; `quality` is a plain field that the mjpeg encoder
        // reads as the frame's lambda when the QSCALE flag is set.
        unsafe {
            (*yuv.as_mut_ptr()).quality = i32::from(qscale) * QP2LAMBDA;
        }
        Ok(Self {
            encoder,
            scaler,
            rgb: ffmpeg::frame::Video::new(Pixel::RGB24, width, height),
            yuv,
            key: (width, height, qscale),
            count: 0,
        })
    }

    /// Encodes `img` (which must have this encoder's size) to JPEG bytes.
    pub fn encode(&mut self, img: &RgbImage) -> Result<Vec<u8>, ffmpeg::Error> {
        let (w, h) = img.dimensions();
        if (w, h) != (self.key.0, self.key.1) {
            return Err(ffmpeg::Error::InvalidData);
        }
        let row = w as usize * 3;
        let stride = self.rgb.stride(0);
        let plane = self.rgb.data_mut(0);
        for (y, src) in img.as_raw().chunks_exact(row).enumerate() {
            plane[y * stride..y * stride + row].copy_from_slice(src);
        }
        self.scaler.run(&self.rgb, &mut self.yuv)?;
        self.yuv.set_pts(Some(self.count));
        self.count += 1;
        self.encoder.send_frame(&self.yuv)?;
        let mut packet = ffmpeg::Packet::empty();
        self.encoder.receive_packet(&mut packet)?;
        Ok(packet.data().map(<[u8]>::to_vec).unwrap_or_default())
    }
}

thread_local! {
    /// One encoder per worker thread, rebuilt when the size or quality changes.
    static ENCODER: RefCell<Option<JpegEncoder>> = const { RefCell::new(None) };
}

/// Encodes `img` at `qscale` with this thread's cached encoder.
pub fn encode_jpeg(img: &RgbImage, qscale: u8) -> Result<Vec<u8>, ffmpeg::Error> {
    let (w, h) = img.dimensions();
    ENCODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let key = (w, h, qscale.clamp(2, 31));
        let encoder = match slot.take() {
            Some(e) if e.key == key => e,
            _ => JpegEncoder::new(w, h, qscale)?,
        };
        let encoder = slot.insert(encoder);
        encoder.encode(img)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient() -> RgbImage {
        RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, 128])
        })
    }

    #[test]
    fn jpeg_decodes_back_close_to_the_input_and_quality_matters() {
        let img = gradient();
        let best = encode_jpeg(&img, 2).unwrap();
        let worst = encode_jpeg(&img, 31).unwrap();
        assert!(best.starts_with(&[0xff, 0xd8]) && best.ends_with(&[0xff, 0xd9]));
        assert!(
            worst.len() < best.len(),
            "{} vs {}",
            worst.len(),
            best.len()
        );
        let back = image::load_from_memory(&best).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), (64, 48));
        let mean: f64 = back
            .as_raw()
            .iter()
            .zip(img.as_raw())
            .map(|(&a, &b)| f64::from(a.abs_diff(b)))
            .sum::<f64>()
            / img.as_raw().len() as f64;
        assert!(mean < 2.0, "mean abs error {mean}");
        // The cached encoder is reused and rebuilt for another size.
        let small = RgbImage::from_pixel(16, 16, image::Rgb([200, 10, 10]));
        let back = image::load_from_memory(&encode_jpeg(&small, 2).unwrap()).unwrap();
        assert_eq!((back.width(), back.height()), (16, 16));
    }
}
