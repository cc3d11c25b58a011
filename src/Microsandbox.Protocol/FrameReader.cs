using System.Buffers.Binary;

namespace Microsandbox.Protocol;

/// <summary>Reads frames from a byte stream, rejecting any that break the format.</summary>
/// <remarks>Not thread-safe: one reader loop per stream.</remarks>
public sealed class FrameReader
{
    private readonly Stream _stream;
    private readonly byte[] _header = new byte[Frame.HeaderSize];

    /// <summary>Creates a reader over <paramref name="stream"/>; the caller owns the stream.</summary>
    public FrameReader(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        _stream = stream;
    }

    /// <summary>
    /// Reads the next frame. Returns null when the stream ends cleanly between frames; throws
    /// <see cref="ProtocolException"/> when it ends inside one or the frame is malformed.
    /// </summary>
    public async ValueTask<Frame?> ReadAsync(CancellationToken cancellationToken = default)
    {
        int got = await FillAsync(_header, cancellationToken).ConfigureAwait(false);
        if (got == 0)
        {
            return null;
        }

        if (got < Frame.HeaderSize)
        {
            throw new ProtocolException($"Stream ended inside a frame header ({got} of {Frame.HeaderSize} bytes).");
        }

        uint length = BinaryPrimitives.ReadUInt32LittleEndian(_header);
        uint session = BinaryPrimitives.ReadUInt32LittleEndian(_header.AsSpan(4));
        var type = (FrameType)_header[8];
        if (length < Frame.HeaderSize - 4 || length - (Frame.HeaderSize - 4) > Frame.MaxPayloadSize)
        {
            throw new ProtocolException(
                $"Frame length {length} is outside 5..{Frame.MaxPayloadSize + Frame.HeaderSize - 4}.");
        }

        if (!FrameTypes.IsKnown(type))
        {
            throw new ProtocolException($"Unknown frame type 0x{(byte)type:x2} on session {session}.");
        }

        var payload = new byte[length - (Frame.HeaderSize - 4)];
        got = await FillAsync(payload, cancellationToken).ConfigureAwait(false);
        if (got < payload.Length)
        {
            throw new ProtocolException($"Stream ended inside a frame payload ({got} of {payload.Length} bytes).");
        }

        return new Frame(session, type, payload);
    }

    private async ValueTask<int> FillAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = await _stream.ReadAsync(buffer[total..], cancellationToken).ConfigureAwait(false);
            if (n == 0)
            {
                break;
            }

            total += n;
        }

        return total;
    }
}
