using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using Microsandbox.Engine;
using Microsandbox.Engine.Images.Cache;

namespace Microsandbox.Tests.Images.Cache;

public sealed class LayerTarTests
{
    private static readonly byte[] Tar = MakeTar();

    [Theory]
    [InlineData("plain", "application/vnd.oci.image.layer.v1.tar")]
    [InlineData("gzip", "application/vnd.oci.image.layer.v1.tar+gzip")]
    [InlineData("gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip")]
    [InlineData("zstd", "application/vnd.oci.image.layer.v1.tar+zstd")]
    [InlineData("gzip", "application/vnd.oci.image.layer.v1.tar")]
    [InlineData("zstd", null)]
    public void A_layer_opens_as_its_tar_by_its_first_bytes(string compression, string? mediaType)
    {
        byte[] blob = compression switch
        {
            "gzip" => Gzip(Tar),
            "zstd" => Zstd(Tar),
            _ => Tar,
        };

        using Stream tar = LayerTar.Open(new MemoryStream(blob), mediaType);
        using var reader = new TarReader(tar);
        TarEntry entry = reader.GetNextEntry()!;

        Assert.Equal("hello.txt", entry.Name);
        using var content = new StreamReader(entry.DataStream!);
        Assert.Equal("hello from a layer\n", content.ReadToEnd());
    }

    [Theory]
    [InlineData("gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip")]
    [InlineData("zstd", "application/vnd.oci.image.layer.v1.tar+zstd")]
    [InlineData("plain", "application/vnd.oci.image.layer.v1.tar")]
    public void A_stream_read_once_is_unpacked_by_its_media_type(string compression, string mediaType)
    {
        byte[] blob = compression switch
        {
            "gzip" => Gzip(Tar),
            "zstd" => Zstd(Tar),
            _ => Tar,
        };

        using Stream tar = LayerTar.Open(new ForwardOnlyStream(blob), mediaType);
        using var copy = new MemoryStream();
        tar.CopyTo(copy);

        Assert.Equal(Tar, copy.ToArray());
    }

    [Theory]
    [InlineData("application/vnd.oci.image.layer.v1.tar+gzip+encrypted")]
    [InlineData("application/vnd.oci.image.config.v1+json")]
    [InlineData("application/vnd.cncf.helm.chart.content.v1.tar+gzip")]
    public void A_blob_that_is_not_an_unpackable_layer_is_UnsupportedLayerType(string mediaType)
    {
        var error = Assert.Throws<SandboxException>(() => LayerTar.Open(new MemoryStream(Tar), mediaType));

        Assert.Equal("UnsupportedLayerType", error.ErrorId);
        Assert.Equal(mediaType, error.Target);
    }

    /// <summary>A stream that cannot seek, like a tar entry being read out of an image archive.</summary>
    private sealed class ForwardOnlyStream(byte[] content) : MemoryStream(content)
    {
        public override bool CanSeek => false;
    }

    private static byte[] MakeTar()
    {
        using var output = new MemoryStream();
        using (var writer = new TarWriter(output, TarEntryFormat.Pax, leaveOpen: true))
        {
            writer.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "hello.txt")
            {
                DataStream = new MemoryStream(Encoding.UTF8.GetBytes("hello from a layer\n")),
            });
        }

        return output.ToArray();
    }

    private static byte[] Gzip(byte[] content)
    {
        using var output = new MemoryStream();
        using (var gzip = new GZipStream(output, CompressionLevel.Fastest, leaveOpen: true))
        {
            gzip.Write(content);
        }

        return output.ToArray();
    }

    private static byte[] Zstd(byte[] content)
    {
        using var output = new MemoryStream();
        using (var zstd = new ZstdSharp.CompressionStream(output, level: 3, leaveOpen: true))
        {
            zstd.Write(content);
        }

        return output.ToArray();
    }
}
