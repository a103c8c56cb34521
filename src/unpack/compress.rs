//! Compressed streams, told apart by their magic bytes: gzip, xz and zstd (each
//! behind a cargo feature but gzip), or none. Every decoder reads the downloaded
//! file as a stream, checks the stream's own checksums, and keeps its memory
//! bounded by [`DECODER_WINDOW_BYTES_MAX`] whatever the headers ask for.

use super::shared::UnpackError;
use std::io::Read;

pub(super) const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// The largest dictionary (xz) or window (zstd) a stream may ask for: `xz -9`
/// (64 MiB) and `zstd -19` (8 MiB) fit; `zstd --ultra -22 --long` does not.
pub const DECODER_WINDOW_BYTES_MAX: u64 = 64 << 20;

/// How a stream is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    /// The compression whose magic `head` starts with, if any.
    pub(super) fn sniff(head: &[u8]) -> Option<Compression> {
        [
            (GZIP_MAGIC, Compression::Gzip),
            (XZ_MAGIC, Compression::Xz),
            (ZSTD_MAGIC, Compression::Zstd),
        ]
        .into_iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, compression)| compression)
    }
}

/// A reader of the decompressed stream (errors from a decoder are `InvalidData`
/// or `Other`, never an OS error, so that they count as the package's fault).
/// Readers are boxed on both sides, so that each decoder is compiled once whatever
/// the format that holds the stream (the binary is smaller by tens of KB).
pub(super) fn decoder<'a>(
    compression: Compression,
    inner: Box<dyn Read + 'a>,
) -> Result<Box<dyn Read + 'a>, UnpackError> {
    match compression {
        Compression::None => Ok(Box::new(inner)),
        Compression::Gzip => Ok(Box::new(flate2::read::GzDecoder::new(inner))),
        Compression::Xz => xz(inner),
        Compression::Zstd => zstd(inner),
    }
}

#[cfg(feature = "xz")]
fn xz<'a>(inner: Box<dyn Read + 'a>) -> Result<Box<dyn Read + 'a>, UnpackError> {
    let limit_kib = u32::try_from(DECODER_WINDOW_BYTES_MAX / 1024).unwrap_or(u32::MAX);
    Ok(Box::new(lzma_rust2::XzReader::new_mem_limit(
        inner, true, limit_kib,
    )))
}

#[cfg(not(feature = "xz"))]
fn xz<'a>(_inner: Box<dyn Read + 'a>) -> Result<Box<dyn Read + 'a>, UnpackError> {
    Err(super::shared::bad(
        "xz-compressed package, but this build has no xz support".to_string(),
    ))
}

#[cfg(feature = "zstd")]
fn zstd<'a>(inner: Box<dyn Read + 'a>) -> Result<Box<dyn Read + 'a>, UnpackError> {
    Ok(Box::new(zstd::ZstdReader::new(inner)))
}

#[cfg(not(feature = "zstd"))]
fn zstd<'a>(_inner: Box<dyn Read + 'a>) -> Result<Box<dyn Read + 'a>, UnpackError> {
    Err(super::shared::bad(
        "zstd-compressed package, but this build has no zstd support".to_string(),
    ))
}

#[cfg(feature = "zstd")]
mod zstd {
    //! All the frames of a zstd stream (skippable ones skipped), each checked
    //! against its content checksum when it has one.

    use super::DECODER_WINDOW_BYTES_MAX;
    use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
    use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
    use std::io::{self, BufRead, BufReader, Read};

    pub(super) struct ZstdReader<R: Read> {
        source: BufReader<R>,
        decoder: FrameDecoder,
        in_frame: bool,
    }

    impl<R: Read> ZstdReader<R> {
        pub(super) fn new(inner: R) -> Self {
            let mut decoder = FrameDecoder::new();
            decoder.set_max_window_size(DECODER_WINDOW_BYTES_MAX);
            ZstdReader {
                source: BufReader::new(inner),
                decoder,
                in_frame: false,
            }
        }

        /// Starts the next frame; false at the end of the stream.
        fn next_frame(&mut self) -> io::Result<bool> {
            loop {
                if self.source.fill_buf()?.is_empty() {
                    return Ok(false);
                }
                match self.decoder.reset(&mut self.source) {
                    Ok(()) => return Ok(true),
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        let skipped =
                            io::copy(&mut (&mut self.source).take(length.into()), &mut io::sink())?;
                        if skipped != u64::from(length) {
                            return Err(invalid("zstd skippable frame is truncated".to_string()));
                        }
                    }
                    Err(e) => return Err(invalid(message(&e))),
                }
            }
        }
    }

    fn invalid(message: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, message)
    }

    /// One line for a decoder error, said here rather than by the decoder's own
    /// `Display` (whose code is a good part of the decoder's size).
    fn message(e: &FrameDecoderError) -> String {
        match e {
            FrameDecoderError::WindowSizeTooBig { requested, max } => {
                format!("zstd frame asks for a window of {requested} bytes (at most {max})")
            }
            FrameDecoderError::ReadFrameHeaderError(_)
            | FrameDecoderError::FrameHeaderError(_)
            | FrameDecoderError::FailedToInitialize(_) => "zstd frame header is bad".to_string(),
            FrameDecoderError::FailedToReadBlockHeader(_)
            | FrameDecoderError::FailedToReadBlockBody(_) => {
                "zstd block is corrupt or truncated".to_string()
            }
            FrameDecoderError::FailedToReadChecksum(_) => "zstd checksum is truncated".to_string(),
            FrameDecoderError::DictNotProvided { .. } => {
                "zstd frame needs a dictionary".to_string()
            }
            _ => "zstd stream is corrupt".to_string(),
        }
    }

    impl<R: Read> Read for ZstdReader<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if buf.is_empty() {
                return Ok(0);
            }
            loop {
                if !self.in_frame {
                    if !self.next_frame()? {
                        return Ok(0);
                    }
                    self.in_frame = true;
                }
                if self.decoder.can_collect() > 0 {
                    return self.decoder.read(buf);
                }
                if self.decoder.is_finished() {
                    let expected = self.decoder.get_checksum_from_data();
                    if expected.is_some() && expected != self.decoder.get_calculated_checksum() {
                        return Err(invalid("zstd frame fails its checksum".to_string()));
                    }
                    self.in_frame = false;
                    continue;
                }
                self.decoder
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(|e| invalid(message(&e)))?;
            }
        }
    }
}
