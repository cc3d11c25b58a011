using System.IO.Compression;
using ZstdSharp;

namespace Microsandbox.Engine.Images.Cache;

/// <summary>
/// Opens a layer blob as the tar stream inside it, whether it is stored plain, gzip or zstd. The
/// compression is read from the blob's first bytes, not trusted from the media type, because image
/// tars and older tools label layers loosely.
/// </summary>
public static class LayerTar
{
    /// <summary>The first bytes of a gzip stream.</summary>
    internal static readonly byte[] GzipMagic = [0x1f, 0x8b];

    /// <summary>The first bytes of a zstd frame.</summary>
    internal static readonly byte[] ZstdMagic = [0x28, 0xb5, 0x2f, 0xfd];

    /// <summary>
    /// Wraps <paramref name="blob"/> in the right decompressor and takes ownership of it; a stream
    /// that cannot seek is taken at its media type's word. A media type that is not a layer, or an
    /// encrypted layer, fails with <c>UnsupportedLayerType</c>.
    /// </summary>
    public static Stream Open(Stream blob, string? mediaType)
    {
        ArgumentNullException.ThrowIfNull(blob);
        if (mediaType is not null && !IsLayerMediaType(mediaType))
        {
            blob.Dispose();
            throw new SandboxException("UnsupportedLayerType", SandboxErrorKind.InvalidArgument,
                $"Layers of type '{mediaType}' cannot be unpacked; only plain, gzip and zstd tars can.",
                mediaType);
        }

        if (!blob.CanSeek)
        {
            // A stream read once (an image tar being imported) cannot be sniffed: its label decides.
            return mediaType switch
            {
                string t when t.EndsWith("gzip", StringComparison.Ordinal) =>
                    new GZipStream(blob, CompressionMode.Decompress, leaveOpen: false),
                string t when t.EndsWith("+zstd", StringComparison.Ordinal) =>
                    new DecompressionStream(blob, leaveOpen: false),
                _ => blob,
            };
        }

        Span<byte> head = stackalloc byte[4];
        long start = blob.Position;
        int read = blob.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        blob.Position = start;
        if (read >= 2 && head[..2].SequenceEqual(GzipMagic))
        {
            return new GZipStream(blob, CompressionMode.Decompress, leaveOpen: false);
        }

        if (read >= 4 && head.SequenceEqual(ZstdMagic))
        {
            return new DecompressionStream(blob, leaveOpen: false);
        }

        return blob;
    }

    /// <summary>Opens a cached layer as its tar stream.</summary>
    public static Stream Open(LayerCache cache, string digest, string? mediaType)
    {
        ArgumentNullException.ThrowIfNull(cache);
        return Open(cache.OpenBlob(digest), mediaType);
    }

    /// <summary>Whether <paramref name="mediaType"/> names an unencrypted OCI or Docker layer.</summary>
    public static bool IsLayerMediaType(string mediaType)
    {
        ArgumentNullException.ThrowIfNull(mediaType);
        if (mediaType.Contains("+encrypted", StringComparison.Ordinal))
        {
            return false;
        }

        return mediaType.StartsWith("application/vnd.oci.image.layer.", StringComparison.Ordinal)
            || mediaType.StartsWith("application/vnd.docker.image.rootfs.", StringComparison.Ordinal);
    }
}
