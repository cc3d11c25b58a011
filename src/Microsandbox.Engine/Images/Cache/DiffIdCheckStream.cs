using System.Security.Cryptography;

namespace Microsandbox.Engine.Images.Cache;

/// <summary>
/// Reads a layer's uncompressed tar and, when it has been read to its end, checks it against the
/// layer's diff_id from the image config. The blob's own digest says the compressed bytes are the
/// ones the manifest names; this says they unpack to the tar the image was built from, which a
/// decompressor that stops early (a gzip stream without its trailer) would not catch.
/// </summary>
internal sealed class DiffIdCheckStream : Stream
{
    private readonly Stream _tar;
    private readonly string _diffId;
    private readonly string _layer;
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private bool _checked;

    /// <summary>Takes ownership of <paramref name="tar"/>, the layer <paramref name="layer"/>'s tar.</summary>
    public DiffIdCheckStream(Stream tar, string diffId, string layer)
    {
        _tar = tar;
        _diffId = diffId;
        _layer = layer;
    }

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
        int read = _tar.Read(buffer);
        return Seen(buffer.Length, buffer[..read]);
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        int read = await _tar.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        return Seen(buffer.Length, buffer.Span[..read]);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _tar.Dispose();
            _hash.Dispose();
        }

        base.Dispose(disposing);
    }

    // Hashes what was read; a read of nothing where something was asked for is the end, where the
    // digest is checked, once.
    private int Seen(int asked, ReadOnlySpan<byte> data)
    {
        _hash.AppendData(data);
        if (data.Length > 0 || asked == 0 || _checked)
        {
            return data.Length;
        }

        _checked = true;
        string actual = ContentDigest.FromHash(_hash.GetHashAndReset());
        if (actual != _diffId)
        {
            // Corrupt as a tar that does not parse is: the layer is not what the image was built from.
            throw new SandboxException("LayerCorrupt", SandboxErrorKind.InvalidArgument,
                $"The layer {_layer} unpacks to a tar of digest {actual}, not the diff_id {_diffId} "
                + "its image config names; the image was refused.", _layer)
            {
                Hint = "The layer or the image config was altered, cut short or built wrongly. Rebuild or "
                    + "push the image again.",
            };
        }

        return 0;
    }
}
