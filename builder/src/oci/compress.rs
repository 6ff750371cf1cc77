//! Layer compression: the codecs, the OCI media type of each, and the check
//! that a blob's first bytes match the codec its media type declares.
//!
//! Both encoders are deterministic for a given input and crate version:
//! gzip is written with a zero mtime, no file name and the "unknown"
//! operating system byte, and zstd runs single-threaded at a fixed level.

use std::io::{self, Read, Write};

use oci_spec::image::MediaType;

/// gzip member header magic (RFC 1952, section 2.3.1).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// zstd frame magic number 0xFD2FB528, little-endian (RFC 8878, section 3.1.1).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// gzip level of written layers, flate2's default (6).
const GZIP_LEVEL: u32 = 6;
/// zstd level of written layers, zstd's default (3).
const ZSTD_LEVEL: i32 = 3;

/// Codec of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip, which every Docker and OCI tool reads.
    #[default]
    Gzip,
    /// zstd, smaller and faster to decompress; only OCI media types carry it.
    Zstd,
}

impl Compression {
    /// Parses a recipe or command-line value: `gzip` or `zstd`.
    pub fn parse_layer_codec(value: &str) -> Option<Self> {
        match value {
            "gzip" => Some(Self::Gzip),
            "zstd" => Some(Self::Zstd),
            _ => None,
        }
    }

    /// Name as written in recipes and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "uncompressed",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }

    /// OCI media type of a layer with this codec.
    pub fn oci_layer_media_type(self) -> MediaType {
        match self {
            Self::None => MediaType::ImageLayer,
            Self::Gzip => MediaType::ImageLayerGzip,
            Self::Zstd => MediaType::ImageLayerZstd,
        }
    }

    /// Recognises a codec by the first bytes of a blob. Anything that starts
    /// with neither magic number is taken as a plain tar stream.
    pub fn detect(prefix: &[u8]) -> Self {
        if prefix.starts_with(&GZIP_MAGIC) {
            Self::Gzip
        } else if prefix.starts_with(&ZSTD_MAGIC) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// Family of a layer media type. A Docker schema 2 manifest may only list
/// Docker layer types, and Docker defines no zstd layer type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTypeFamily {
    Oci,
    Docker,
}

/// Returns the codec and family that a layer media type declares, or `None`
/// for a media type that is not a layer.
pub fn layer_media_type_codec(media_type: &str) -> Option<(Compression, MediaTypeFamily)> {
    let codec = match media_type {
        "application/vnd.oci.image.layer.v1.tar" => (Compression::None, MediaTypeFamily::Oci),
        "application/vnd.oci.image.layer.v1.tar+gzip" => (Compression::Gzip, MediaTypeFamily::Oci),
        "application/vnd.oci.image.layer.v1.tar+zstd" => (Compression::Zstd, MediaTypeFamily::Oci),
        "application/vnd.docker.image.rootfs.diff.tar" => (Compression::None, MediaTypeFamily::Docker),
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => (Compression::Gzip, MediaTypeFamily::Docker),
        _ => return None,
    };
    Some(codec)
}

/// A writer that compresses what it is given with one codec.
pub enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub fn new(compression: Compression, inner: W) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Self::None(inner),
            Compression::Gzip => Self::Gzip(
                flate2::GzBuilder::new().mtime(0).operating_system(255).write(inner, flate2::Compression::new(GZIP_LEVEL)),
            ),
            Compression::Zstd => Self::Zstd(zstd::stream::write::Encoder::new(inner, ZSTD_LEVEL)?),
        })
    }

    /// Writes the end of the compressed stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Self::None(inner) => Ok(inner),
            Self::Gzip(encoder) => encoder.finish(),
            Self::Zstd(encoder) => encoder.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::None(inner) => inner.write(buf),
            Self::Gzip(encoder) => encoder.write(buf),
            Self::Zstd(encoder) => encoder.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::None(inner) => inner.flush(),
            Self::Gzip(encoder) => encoder.flush(),
            Self::Zstd(encoder) => encoder.flush(),
        }
    }
}

/// Returns a reader of the decompressed bytes of `inner`.
pub fn decoder<'a, R: Read + 'a>(compression: Compression, inner: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(inner),
        // A layer may be several gzip members written one after the other.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(compression: Compression, data: &[u8]) -> Vec<u8> {
        let mut encoder = Encoder::new(compression, Vec::new()).expect("encoder");
        encoder.write_all(data).expect("write");
        encoder.finish().expect("finish")
    }

    #[test]
    fn detect_recognises_each_codec() {
        let data = b"motor_controller self test";
        assert_eq!(Compression::detect(&compress(Compression::Gzip, data)), Compression::Gzip);
        assert_eq!(Compression::detect(&compress(Compression::Zstd, data)), Compression::Zstd);
        assert_eq!(Compression::detect(&compress(Compression::None, data)), Compression::None);
        assert_eq!(Compression::detect(&[]), Compression::None);
    }

    #[test]
    fn encoders_are_deterministic_and_round_trip() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for compression in [Compression::Gzip, Compression::Zstd] {
            let first = compress(compression, &data);
            assert_eq!(first, compress(compression, &data), "{} output differs between runs", compression.name());
            let mut plain = Vec::new();
            decoder(compression, first.as_slice()).expect("decoder").read_to_end(&mut plain).expect("decode");
            assert_eq!(plain, data);
        }
    }

    #[test]
    fn gzip_header_has_no_time_and_unknown_os() {
        let bytes = compress(Compression::Gzip, b"x");
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "mtime");
        assert_eq!(bytes[9], 255, "operating system");
    }

    #[test]
    fn docker_media_types_have_no_zstd() {
        assert_eq!(
            layer_media_type_codec("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some((Compression::Gzip, MediaTypeFamily::Docker))
        );
        assert_eq!(
            layer_media_type_codec("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some((Compression::Zstd, MediaTypeFamily::Oci))
        );
        assert_eq!(layer_media_type_codec("application/vnd.docker.image.rootfs.diff.tar.zstd"), None);
        assert_eq!(layer_media_type_codec("application/vnd.oci.image.config.v1+json"), None);
    }
}
