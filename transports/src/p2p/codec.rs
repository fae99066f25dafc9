//! The request–response codec: frames are a 4-byte big-endian length and that many bytes,
//! with a size limit.

use super::Misbehaviour;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use std::io;

/// Length-prefixed frames with a size limit.
#[derive(Debug, Clone)]
pub(super) struct FrameCodec {
    pub(super) max: usize,
    pub(super) misbehave: Option<Misbehaviour>,
}

impl FrameCodec {
    async fn read<T: futures::AsyncRead + Unpin + Send>(&self, io: &mut T) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes is over the limit of {}", self.max),
            ));
        }
        let mut buf = vec![0u8; len];
        io.read_exact(&mut buf).await?;
        Ok(buf)
    }

    async fn write<T: futures::AsyncWrite + Unpin + Send>(
        &self,
        io: &mut T,
        frame: Vec<u8>,
        misbehave: Option<Misbehaviour>,
    ) -> io::Result<()> {
        if frame.len() > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame over the limit",
            ));
        }
        let len = u32::try_from(frame.len()).expect("frames are far below 4 GiB");
        match misbehave {
            None => {
                io.write_all(&len.to_be_bytes()).await?;
                io.write_all(&frame).await?;
            }
            Some(Misbehaviour::Truncate) => {
                io.write_all(&len.to_be_bytes()).await?;
                io.write_all(&frame[..frame.len() / 2]).await?;
            }
            Some(Misbehaviour::NoPrefix) => io.write_all(&frame).await?,
        }
        io.close().await
    }
}

/// An incoming request frame, or what was wrong with it. A broken frame still becomes an event
/// so that the link knows which peer sent it (libp2p reports failed reads without the peer).
#[derive(Debug)]
pub(super) enum InFrame {
    Data(Vec<u8>),
    Broken(String),
}

#[async_trait::async_trait]
impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = InFrame;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<InFrame>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        Ok(match self.read(io).await {
            Ok(frame) => InFrame::Data(frame),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                InFrame::Broken("truncated frame".into())
            }
            Err(e) => InFrame::Broken(e.to_string()),
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        self.read(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: InFrame,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        let m = self.misbehave;
        match req {
            InFrame::Data(frame) => self.write(io, frame, m).await,
            InFrame::Broken(_) => Err(io::Error::new(io::ErrorKind::InvalidInput, "not a frame")),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        self.write(io, res, None).await
    }
}
