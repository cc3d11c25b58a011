using System.Security.Cryptography;
using Microsandbox.Engine.Images.Erofs;

namespace Microsandbox.Engine;

/// <summary>
/// A sandbox's root as two disks: the image's read-only EROFS base, shared by every sandbox of
/// that image, and the sandbox's own sparse ext4 upper disk. The agent stacks them with overlayfs,
/// so what one sandbox writes no other sees, and it survives a stop and start. A disk image as the
/// image is the one exception: the sandbox gets a root disk of its own, with no overlay.
/// </summary>
internal static class RootDisks
{
    /// <summary>Serial of the base image disk, as the agent looks it up.</summary>
    public const string LowerSerial = "msb-lower";

    /// <summary>Serial of the upper disk.</summary>
    public const string UpperSerial = "msb-upper";

    /// <summary>Serial of the sandbox's own root disk, when a disk image is its root.</summary>
    public const string RootSerial = "msb-root";

    /// <summary>Apparent size of a new upper disk; sparse, so only what is written takes space.</summary>
    private const long UpperDiskBytes = 8L << 30;

    /// <summary>
    /// The EROFS image of the built-in default image, built once per home from the layer the
    /// module ships and named by that layer's digest. Two processes may build it at once: each
    /// writes through its own temp file and the same bytes win the rename.
    /// </summary>
    public static async Task<string> DefaultImageAsync(
        SandboxHome home, GuestAssets assets, IProgress<SandboxMessage>? progress, CancellationToken cancellationToken)
    {
        string layer = assets.DefaultImageLayerPath;
        string digest;
        await using (FileStream stream = File.OpenRead(layer))
        {
            digest = Convert.ToHexString(await SHA256.HashDataAsync(stream, cancellationToken).ConfigureAwait(false))
                .ToLowerInvariant();
        }

        string images = Path.Join(home.CacheDirectory, "images");
        SandboxHome.CreatePrivateDirectory(images);
        string image = Path.Join(images, $"default-{digest[..16]}.erofs");
        if (File.Exists(image))
        {
            return image;
        }

        progress?.Report(new(SandboxMessageLevel.Verbose, "Building the default image's EROFS base (once)."));
        await using FileStream tar = File.OpenRead(layer);
        await new ErofsImageBuilder().WriteFromLayersAsync([tar], image, null, cancellationToken)
            .ConfigureAwait(false);
        return image;
    }

    /// <summary>The sandbox's upper disk, which holds what it writes over its image's base.</summary>
    public static string UpperDiskPath(string sandboxDirectory) => Path.Join(sandboxDirectory, "upper.img");

    /// <summary>Creates the sandbox's upper disk as a sparse ext4 image, unless it exists.</summary>
    public static async Task<string> EnsureUpperDiskAsync(
        string sandboxDirectory, object target, CancellationToken cancellationToken)
    {
        string path = UpperDiskPath(sandboxDirectory);
        if (File.Exists(path))
        {
            return path;
        }

        string temp = path + ".tmp";
        using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write))
        {
            file.SetLength(UpperDiskBytes);
        }

        try
        {
            HostToolResult mkfs = await HostTool.RunAsync("mkfs.ext4",
                ["-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", temp],
                ex => new SandboxException("Ext4ToolsNotFound", SandboxErrorKind.NotInstalled,
                    "mkfs.ext4 was not found; it formats each sandbox's upper disk.", "mkfs.ext4", ex)
                {
                    Hint = "Install e2fsprogs: 'sudo apt-get install e2fsprogs'.",
                },
                cancellationToken).ConfigureAwait(false);
            if (mkfs.ExitCode != 0)
            {
                throw new SandboxException("UpperDiskFailed", SandboxErrorKind.DeviceError,
                    $"mkfs.ext4 could not format the upper disk: {mkfs.Error.Trim()}", target);
            }
        }
        catch
        {
            File.Delete(temp);
            throw;
        }

        File.Move(temp, path);
        return path;
    }

    /// <summary>The sandbox's own root disk when its image is a disk image.</summary>
    public static string RootDiskPath(string sandboxDirectory, DiskImageFormat format) =>
        Path.Join(sandboxDirectory, format == DiskImageFormat.Qcow2 ? "root.qcow2" : "root.img");

    /// <summary>
    /// Gives the sandbox its own root disk from a disk image, once, when it is created: a qcow2
    /// overlay backed by a qcow2 original, or a sparse copy of a raw one (a reflink where the
    /// filesystem has them, so even a large image costs no time). The original is never written.
    /// </summary>
    public static async Task<string> CreateRootDiskAsync(
        DiskImage image, string sandboxDirectory, object target, CancellationToken cancellationToken)
    {
        string path = RootDiskPath(sandboxDirectory, image.Format);
        if (image.Format == DiskImageFormat.Qcow2)
        {
            await QemuImg.Require().CreateOverlayAsync(image.Path, path, target, cancellationToken)
                .ConfigureAwait(false);
            return path;
        }

        HostToolResult copy = await HostTool.RunAsync("cp",
            ["--sparse=always", "--reflink=auto", "--", image.Path, path],
            ex => new SandboxException("RootDiskFailed", SandboxErrorKind.DeviceError,
                "cp was not found; it copies a raw disk image for the sandbox.", "cp", ex),
            cancellationToken).ConfigureAwait(false);
        if (copy.ExitCode != 0)
        {
            throw new SandboxException("RootDiskFailed", SandboxErrorKind.DeviceError,
                $"The raw disk image '{image.Path}' could not be copied for the sandbox: {copy.Error.Trim()}",
                target);
        }

        return path;
    }
}
