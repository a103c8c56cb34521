//! `ftp://` downloads, hand-rolled over `TcpStream`: passive mode (`EPSV` first, `PASV`
//! as the fallback on IPv4), binary type, `SIZE` when the server has it; replies read
//! with bounded line lengths and line counts; socket reads that wake every `POLL_MS` to
//! look at the cancel flag.

use super::shared::{clip, io_problem, Ctx, DownloadError, Source};
use super::url::{host_port, percent_decode, split_url};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Socket reads wake at least this often to look at `cancel`.
const POLL_MS: u64 = 200;
const FTP_PORT: u16 = 21;
const FTP_ANONYMOUS_USER: &[u8] = b"anonymous";
const FTP_ANONYMOUS_PASSWORD: &[u8] = b"bootagent@";
/// Longest FTP reply line read (RFC 959 lines are far shorter).
const FTP_LINE_BYTES_MAX: usize = 2048;
/// Most lines in one multi-line FTP reply (welcome banners).
const FTP_REPLY_LINES_MAX: usize = 200;
/// Most preliminary (1xx) replies accepted before the one awaited.
const FTP_PRELIMINARY_MAX: usize = 8;
/// FTP reply classes (the code's first digit) and the codes awaited by number.
const FTP_CLASS_DIVISOR: u16 = 100;
const FTP_PRELIMINARY: u16 = 1;
const FTP_COMPLETION: u16 = 2;
const FTP_INTERMEDIATE: u16 = 3;
const FTP_SIZE_OK: u16 = 213;
const FTP_PASV_OK: u16 = 227;
const FTP_EPSV_OK: u16 = 229;
/// Numbers in a `PASV` reply: four of the address, two of the port.
const PASV_NUMBERS: usize = 6;

/// A socket whose reads wake every `POLL_MS` to look at the cancel flag, and fail
/// with `TimedOut` only after `stall` without a byte.
struct Polled<'a> {
    stream: TcpStream,
    stall: Duration,
    cancel: &'a AtomicBool,
}

impl<'a> Polled<'a> {
    fn new(stream: TcpStream, ctx: &Ctx<'a>) -> io::Result<Polled<'a>> {
        let stall = ctx.stall();
        stream.set_read_timeout(Some(stall.min(Duration::from_millis(POLL_MS))))?;
        stream.set_write_timeout(Some(stall))?;
        Ok(Polled {
            stream,
            stall,
            cancel: ctx.cancel,
        })
    }
}

impl Read for Polled<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let start = Instant::now();
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(io::Error::other("cancelled"));
            }
            match self.stream.read(buf) {
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if start.elapsed() >= self.stall {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "stalled"));
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

/// One FTP reply: its code and its first line's text.
struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    fn class(&self) -> u16 {
        self.code / FTP_CLASS_DIVISOR
    }
    fn shown(&self) -> String {
        format!("{} {}", self.code, self.text)
    }
}

/// The control connection.
struct Control<'a> {
    reader: BufReader<Polled<'a>>,
    /// `host:port` as the URL gave it, for messages.
    server: String,
}

impl<'a> Control<'a> {
    fn io_error(&self, err: &io::Error, ctx: &Ctx<'_>) -> DownloadError {
        if ctx.is_cancelled() {
            return ctx.cancelled();
        }
        match err.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ctx.stalled(),
            io::ErrorKind::UnexpectedEof => {
                DownloadError::Network(format!("ftp {}: connection closed", self.server))
            }
            _ => DownloadError::Network(format!("ftp {}: {}", self.server, io_problem(err))),
        }
    }

    fn refused(&self, reply: &Reply) -> DownloadError {
        DownloadError::Ftp {
            server: self.server.clone(),
            reply: reply.shown(),
        }
    }

    fn garbage(&self, problem: &str) -> DownloadError {
        DownloadError::Network(format!("ftp {}: {problem}", self.server))
    }

    /// One line without its CR LF, at most `FTP_LINE_BYTES_MAX` long.
    fn read_line(&mut self, ctx: &Ctx<'_>) -> Result<Vec<u8>, DownloadError> {
        let mut line = Vec::new();
        let mut bounded = (&mut self.reader).take(FTP_LINE_BYTES_MAX as u64 + 1);
        if let Err(err) = bounded.read_until(b'\n', &mut line) {
            return Err(self.io_error(&err, ctx));
        }
        if line.last() != Some(&b'\n') {
            if line.len() > FTP_LINE_BYTES_MAX {
                return Err(self.garbage(&format!("reply line over {FTP_LINE_BYTES_MAX} bytes")));
            }
            let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
            return Err(self.io_error(&eof, ctx));
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        Ok(line)
    }

    /// One reply, multi-line ones (`123-` … `123 `) included.
    fn read_reply(&mut self, ctx: &Ctx<'_>) -> Result<Reply, DownloadError> {
        let first = self.read_line(ctx)?;
        let code = reply_code(&first).ok_or_else(|| {
            let text = String::from_utf8_lossy(&first);
            self.garbage(&format!("not an FTP reply: {}", clip(&text)))
        })?;
        let text = clip(String::from_utf8_lossy(first.get(4..).unwrap_or_default()).trim());
        if first.get(3) == Some(&b'-') {
            let mut lines = 1;
            loop {
                if lines >= FTP_REPLY_LINES_MAX {
                    return Err(self.garbage(&format!("reply over {FTP_REPLY_LINES_MAX} lines")));
                }
                let line = self.read_line(ctx)?;
                lines += 1;
                let last =
                    line.get(..3) == first.get(..3) && matches!(line.get(3), None | Some(b' '));
                if last {
                    break;
                }
            }
        }
        Ok(Reply { code, text })
    }

    /// The next reply that is not preliminary (1xx).
    fn read_final(&mut self, ctx: &Ctx<'_>) -> Result<Reply, DownloadError> {
        for _ in 0..FTP_PRELIMINARY_MAX {
            let reply = self.read_reply(ctx)?;
            if reply.class() != FTP_PRELIMINARY {
                return Ok(reply);
            }
        }
        Err(self.garbage(&format!("over {FTP_PRELIMINARY_MAX} preliminary replies")))
    }

    fn send(&mut self, verb: &str, arg: &[u8], ctx: &Ctx<'_>) -> Result<(), DownloadError> {
        let mut line = Vec::with_capacity(verb.len() + arg.len() + 3);
        line.extend_from_slice(verb.as_bytes());
        if !arg.is_empty() {
            line.push(b' ');
            line.extend_from_slice(arg);
        }
        line.extend_from_slice(b"\r\n");
        let mut stream = &self.reader.get_ref().stream;
        stream
            .write_all(&line)
            .map_err(|err| self.io_error(&err, ctx))
    }

    /// Sends one command and returns its first reply (which may be preliminary).
    fn command(&mut self, verb: &str, arg: &[u8], ctx: &Ctx<'_>) -> Result<Reply, DownloadError> {
        self.send(verb, arg, ctx)?;
        self.read_reply(ctx)
    }

    /// Sends one command and returns its final reply.
    fn command_final(
        &mut self,
        verb: &str,
        arg: &[u8],
        ctx: &Ctx<'_>,
    ) -> Result<Reply, DownloadError> {
        self.send(verb, arg, ctx)?;
        self.read_final(ctx)
    }
}

/// `123 text`, `123-text` or `123`: the code, 1xx to 5xx.
pub(super) fn reply_code(line: &[u8]) -> Option<u16> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || !(b'1'..=b'5').contains(&digits[0]) {
        return None;
    }
    if !matches!(line.get(3), None | Some(b' ' | b'-')) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u16, |code, d| code * 10 + u16::from(d - b'0')),
    )
}

pub(super) struct FtpSource<'a> {
    control: Control<'a>,
    data: Polled<'a>,
    size: Option<u64>,
}

pub(super) fn open_ftp<'a>(url: &str, ctx: &Ctx<'a>) -> Result<FtpSource<'a>, DownloadError> {
    let parts = split_url(url).ok_or_else(|| ctx.invalid("bad ftp URL"))?;
    if parts.host.is_empty() {
        return Err(ctx.invalid("no host in ftp URL"));
    }
    let decode = |text: &str| -> Result<Vec<u8>, DownloadError> {
        let bytes = percent_decode(text).map_err(|problem| ctx.invalid(&problem))?;
        if bytes.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(ctx.invalid("control characters in ftp URL"));
        }
        Ok(bytes)
    };
    let (user, password) = match parts.userinfo {
        None => (FTP_ANONYMOUS_USER.to_vec(), FTP_ANONYMOUS_PASSWORD.to_vec()),
        Some(info) => match info.split_once(':') {
            Some((user, password)) => (decode(user)?, decode(password)?),
            None => (decode(info)?, Vec::new()),
        },
    };
    let path = decode(parts.path.strip_prefix('/').unwrap_or(parts.path))?;
    if path.is_empty() {
        return Err(ctx.invalid("no file path in ftp URL"));
    }
    let server = host_port(parts.host, parts.port.unwrap_or(FTP_PORT));
    let stream = connect(parts.host, parts.port.unwrap_or(FTP_PORT), &server, ctx)?;
    let peer = stream
        .peer_addr()
        .map_err(|err| DownloadError::Network(format!("ftp {server}: {}", io_problem(&err))))?;
    let polled = Polled::new(stream, ctx)
        .map_err(|err| DownloadError::Network(format!("ftp {server}: {}", io_problem(&err))))?;
    let mut control = Control {
        reader: BufReader::new(polled),
        server,
    };

    let greeting = control.read_final(ctx)?;
    if greeting.class() != FTP_COMPLETION {
        return Err(control.refused(&greeting));
    }
    let mut reply = control.command_final("USER", &user, ctx)?;
    if reply.class() == FTP_INTERMEDIATE {
        reply = control.command_final("PASS", &password, ctx)?;
    }
    if reply.class() != FTP_COMPLETION {
        return Err(control.refused(&reply));
    }
    let reply = control.command_final("TYPE", b"I", ctx)?;
    if reply.class() != FTP_COMPLETION {
        return Err(control.refused(&reply));
    }
    let reply = control.command_final("SIZE", &path, ctx)?;
    let size = if reply.code == FTP_SIZE_OK {
        reply.text.trim().parse::<u64>().ok()
    } else {
        None
    };

    let data_port = passive_port(&mut control, peer.ip(), ctx)?;
    let data_addr = SocketAddr::new(peer.ip(), data_port);
    let data = TcpStream::connect_timeout(&data_addr, ctx.connect_timeout())
        .and_then(|stream| Polled::new(stream, ctx))
        .map_err(|err| connect_error(&err, &data_addr.to_string(), ctx))?;

    let reply = control.command("RETR", &path, ctx)?;
    if reply.class() != FTP_PRELIMINARY {
        return Err(control.refused(&reply));
    }
    Ok(FtpSource {
        control,
        data,
        size,
    })
}

/// The data port of a passive transfer: `EPSV`, else `PASV` on IPv4. The address of a
/// `PASV` reply is ignored for the control connection's (as behind NAT it is wrong).
fn passive_port(
    control: &mut Control<'_>,
    peer: IpAddr,
    ctx: &Ctx<'_>,
) -> Result<u16, DownloadError> {
    let reply = control.command_final("EPSV", b"", ctx)?;
    if reply.code == FTP_EPSV_OK {
        return epsv_port(&reply.text)
            .ok_or_else(|| control.garbage(&format!("bad EPSV reply: {}", reply.shown())));
    }
    if peer.is_ipv6() {
        return Err(control.refused(&reply));
    }
    let reply = control.command_final("PASV", b"", ctx)?;
    if reply.code != FTP_PASV_OK {
        return Err(control.refused(&reply));
    }
    pasv_port(&reply.text)
        .ok_or_else(|| control.garbage(&format!("bad PASV reply: {}", reply.shown())))
}

/// `Entering Extended Passive Mode (|||6446|)`: the port.
pub(super) fn epsv_port(text: &str) -> Option<u16> {
    let inside = text.split_once('(')?.1.split_once(')')?.0;
    let delimiter = inside.chars().next()?;
    let fields: Vec<&str> = inside.split(delimiter).collect();
    match fields.as_slice() {
        ["", "", "", port, ""] => port.parse::<u16>().ok().filter(|&port| port != 0),
        _ => None,
    }
}

/// `Entering Passive Mode (h1,h2,h3,h4,p1,p2)`: the port.
pub(super) fn pasv_port(text: &str) -> Option<u16> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let numbers: Vec<u8> = text[start..]
        .split(',')
        .take(PASV_NUMBERS)
        .map(|field| {
            let digits: String = field.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u8>().ok()
        })
        .collect::<Option<Vec<u8>>>()?;
    if numbers.len() != PASV_NUMBERS {
        return None;
    }
    let port = u16::from(numbers[4]) << 8 | u16::from(numbers[5]);
    (port != 0).then_some(port)
}

impl Source for FtpSource<'_> {
    fn size(&self) -> Option<u64> {
        self.size
    }

    fn read(&mut self, buf: &mut [u8], ctx: &Ctx<'_>) -> Result<usize, DownloadError> {
        self.data
            .read(buf)
            .map_err(|err| self.control.io_error(&err, ctx))
    }

    fn finish(&mut self, ctx: &Ctx<'_>) -> Result<(), DownloadError> {
        let _ = self.data.stream.shutdown(std::net::Shutdown::Both);
        let reply = self.control.read_final(ctx)?;
        if reply.class() != FTP_COMPLETION {
            return Err(self.control.refused(&reply));
        }
        // Courtesy only: the connection is closed right after either way.
        let _ = self.control.send("QUIT", b"", ctx);
        Ok(())
    }
}

fn connect(host: &str, port: u16, server: &str, ctx: &Ctx<'_>) -> Result<TcpStream, DownloadError> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|_| DownloadError::Network(format!("host not found: {server}")))?;
    let mut last = None;
    for addr in addrs {
        if ctx.is_cancelled() {
            return Err(ctx.cancelled());
        }
        match TcpStream::connect_timeout(&addr, ctx.connect_timeout()) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(match last {
        Some(err) => connect_error(&err, server, ctx),
        None => DownloadError::Network(format!("host not found: {server}")),
    })
}

fn connect_error(err: &io::Error, target: &str, ctx: &Ctx<'_>) -> DownloadError {
    if ctx.is_cancelled() {
        return ctx.cancelled();
    }
    DownloadError::Network(match err.kind() {
        io::ErrorKind::ConnectionRefused => format!("connection refused to {target}"),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            format!("timed out connecting to {target}")
        }
        _ => format!("{} connecting to {target}", io_problem(err)),
    })
}
