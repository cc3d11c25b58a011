namespace Microsandbox.Engine.Images;

/// <summary>
/// A read-only, forward-only view of another stream that sees every read's bytes as they pass, for
/// what must watch a layer's tar go by (record its headers, hash it) without holding it. The inner
/// stream stays the caller's.
/// </summary>
internal abstract class ObservedReadStream(Stream inner) : Stream
{
    /// <summary>The stream read from.</summary>
    protected Stream Inner { get; } = inner;

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        int read = Inner.Read(buffer);
        Observe(buffer.Length, buffer[..read]);
        return read;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        int read = await Inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        Observe(buffer.Length, buffer.Span[..read]);
        return read;
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    /// <summary>
    /// Sees what one read returned: <paramref name="read"/> of the <paramref name="asked"/> bytes asked
    /// for; nothing read where something was asked for is the end of the stream.
    /// </summary>
    protected abstract void Observe(int asked, ReadOnlySpan<byte> read);
}
