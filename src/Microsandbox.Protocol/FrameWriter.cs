using System.Buffers;
using System.Buffers.Binary;

namespace Microsandbox.Protocol;

/// <summary>Writes whole frames to a byte stream; safe to call from many tasks at once.</summary>
public sealed class FrameWriter : IDisposable
{
    private readonly Stream _stream;
    private readonly SemaphoreSlim _lock = new(1, 1);

    /// <summary>Creates a writer over <paramref name="stream"/>; the caller owns the stream.</summary>
    public FrameWriter(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        _stream = stream;
    }

    /// <summary>Writes one frame. Payloads over <see cref="Frame.MaxPayloadSize"/> are refused.</summary>
    public async ValueTask WriteAsync(
        uint session, FrameType type, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default)
    {
        if (payload.Length > Frame.MaxPayloadSize)
        {
            throw new ArgumentOutOfRangeException(
                nameof(payload), payload.Length, $"A frame payload is at most {Frame.MaxPayloadSize} bytes.");
        }

        // One buffer per frame so a frame is a single write: interleaved partial writes from two
        // sessions would corrupt the stream.
        int size = Frame.HeaderSize + payload.Length;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(size);
        try
        {
            BinaryPrimitives.WriteUInt32LittleEndian(buffer, (uint)(size - 4));
            BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(4), session);
            buffer[8] = (byte)type;
            payload.Span.CopyTo(buffer.AsSpan(Frame.HeaderSize));
            await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                await _stream.WriteAsync(buffer.AsMemory(0, size), cancellationToken).ConfigureAwait(false);
                await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _lock.Release();
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Writes one frame whose payload is <paramref name="payload"/>, as raw bytes.</summary>
    /// <remarks>
    /// Without this overload a <c>byte[]</c> argument binds to <see cref="WriteAsync{T}"/> (an identity
    /// conversion beats the conversion to <see cref="ReadOnlyMemory{T}"/>) and fails at run time.
    /// </remarks>
    public ValueTask WriteAsync(
        uint session, FrameType type, byte[] payload, CancellationToken cancellationToken = default) =>
        WriteAsync(session, type, new ReadOnlyMemory<byte>(payload), cancellationToken);

    /// <summary>Writes a control frame whose payload is <paramref name="message"/> as JSON.</summary>
    public ValueTask WriteAsync<T>(
        uint session, FrameType type, T message, CancellationToken cancellationToken = default)
        where T : class =>
        WriteAsync(session, type, new ReadOnlyMemory<byte>(ProtocolJson.Serialize(message)), cancellationToken);

    /// <summary>Writes raw data, split into frames of at most <see cref="Frame.MaxPayloadSize"/>.</summary>
    public async ValueTask WriteDataAsync(
        uint session, FrameType type, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        do
        {
            int n = Math.Min(data.Length, Frame.MaxPayloadSize);
            await WriteAsync(session, type, data[..n], cancellationToken).ConfigureAwait(false);
            data = data[n..];
        }
        while (!data.IsEmpty);
    }

    /// <inheritdoc/>
    public void Dispose() => _lock.Dispose();
}
