using Microsandbox.Engine.Images.Erofs;

namespace Microsandbox.Tests.Images.Erofs;

/// <summary>A temp folder for images, extractions and spools, deleted on dispose.</summary>
internal sealed class ImageWorkspace : IDisposable
{
    public ImageWorkspace() => Root = Directory.CreateTempSubdirectory("msb-erofs-").FullName;

    public string Root { get; }

    public string PathOf(string name) => Path.Join(Root, name);

    /// <summary>Applies the layers, bottom first, and writes the image; returns its path.</summary>
    public async Task<string> BuildAsync(params LayerTar[] layers)
    {
        string image = PathOf($"image-{Guid.NewGuid():N}.erofs");
        var streams = layers.Select(layer => (Stream)layer.ToStream()).ToList();
        var dropped = await new ErofsImageBuilder()
            .WriteFromLayersAsync(streams, image, null, CancellationToken.None);
        Assert.Empty(dropped);
        return image;
    }

    /// <summary>
    /// Checks the image both ways: erofs-utils checks and extracts it (compared as far as
    /// fsck.erofs 1.5 extracts), and the kernel mounts it (compared in full).
    /// </summary>
    public void Verify(string image, IReadOnlyDictionary<string, ExpectedNode> expected)
    {
        string extracted = HostTool.FsckExtract(image, PathOf($"extract-{Guid.NewGuid():N}"));
        TreeAssert.Matches(extracted, expected, fsckExtraction: true);
        using var mount = MountedImage.Mount(image);
        TreeAssert.Matches(mount.Path, expected);
    }

    public void Dispose()
    {
        // A non-root run extracts without write permission on some folders; root needs no help.
        if (!OperatingSystem.IsWindows() && !Environment.IsPrivilegedProcess)
        {
            var directories = Directory.EnumerateDirectories(Root, "*", SearchOption.AllDirectories);
            foreach (string directory in directories)
            {
                if (!File.GetAttributes(directory).HasFlag(FileAttributes.ReparsePoint))
                {
                    File.SetUnixFileMode(directory, (UnixFileMode)0b111_000_000);
                }
            }
        }

        Directory.Delete(Root, recursive: true);
    }
}
