using System.Globalization;
using System.Text.Json;

namespace Microsandbox.Engine;

/// <summary>What <c>qemu-img info</c> says of an image.</summary>
/// <param name="Format">The format it detected, for example <c>qcow2</c>.</param>
/// <param name="VirtualSize">The size of the disk the guest sees, in bytes.</param>
/// <param name="Encrypted">Whether the image is encrypted (it then needs a key to boot).</param>
/// <param name="BackingFile">The image it is an overlay on, absolute, or null.</param>
internal sealed record QemuImageInfo(string Format, long VirtualSize, bool Encrypted, string? BackingFile);

/// <summary>
/// QEMU's disk image tool: reads a qcow2 image's header and the blocks of the disk it holds, and
/// creates the overlay a sandbox writes into. Only ever reads the images it is handed.
/// </summary>
internal sealed class QemuImg
{
    private const string InstallHint =
        "Install qemu-img: 'sudo apt-get install qemu-utils' (Debian/Ubuntu), 'sudo dnf install qemu-img' (Fedora).";

    private QemuImg(string path) => Path = path;

    /// <summary>The qemu-img executable.</summary>
    public string Path { get; }

    /// <summary>Finds qemu-img beside <c>MSB_QEMU</c>, else on PATH; throws <c>QemuImgNotFound</c>.</summary>
    public static QemuImg Require()
    {
        string binary = OperatingSystem.IsWindows() ? "qemu-img.exe" : "qemu-img";
        IEnumerable<string> folders = (Environment.GetEnvironmentVariable("PATH") ?? "")
            .Split(System.IO.Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries);
        if (Environment.GetEnvironmentVariable("MSB_QEMU") is { Length: > 0 } qemu
            && System.IO.Path.GetDirectoryName(qemu) is { Length: > 0 } beside)
        {
            folders = folders.Prepend(beside);
        }

        return folders.Select(folder => System.IO.Path.Join(folder, binary)).FirstOrDefault(File.Exists)
            is { } path ? new QemuImg(path) : throw NotFound(null);
    }

    /// <summary>The image's format, size, encryption and backing file, without opening the backing file.</summary>
    public async Task<QemuImageInfo> InfoAsync(string image, CancellationToken cancellationToken)
    {
        // -U reads an image a running VM holds open, as a sandbox holds its original.
        HostToolResult result = await RunAsync(
            ["info", "-U", "--output=json", image], cancellationToken).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw new SandboxException("DiskImageInvalid", SandboxErrorKind.InvalidData,
                $"'{image}' starts like a qcow2 image, but qemu-img cannot read it: {result.Error.Trim()}", image);
        }

        using var document = JsonDocument.Parse(result.Output);
        JsonElement root = document.RootElement;
        string? backing = root.TryGetProperty("full-backing-filename", out JsonElement full)
            ? full.GetString()
            : root.TryGetProperty("backing-filename", out JsonElement named) ? named.GetString() : null;
        return new QemuImageInfo(
            root.GetProperty("format").GetString() ?? "",
            root.GetProperty("virtual-size").GetInt64(),
            root.TryGetProperty("encrypted", out JsonElement encrypted) && encrypted.GetBoolean(),
            backing is null ? null : System.IO.Path.GetFullPath(backing, System.IO.Path.GetDirectoryName(image)!));
    }

    /// <summary>
    /// Reads <paramref name="count"/> bytes of the disk a qcow2 image holds at a 512-byte aligned
    /// <paramref name="offset"/>, through its backing chain; fewer where the disk ends.
    /// </summary>
    public byte[] Read(string image, long virtualSize, long offset, int count)
    {
        long end = Math.Min(virtualSize, offset + count);
        if (offset % DiskImage.SectorSize != 0 || offset >= end)
        {
            return [];
        }

        // A raw view of a window of the qcow2 disk, converted to a file: exact on every QEMU since
        // 2.9, where qemu-img dd's skip and count interact differently from one version to the next.
        DirectoryInfo scratch = Directory.CreateTempSubdirectory("msb-qemu-img-");
        try
        {
            string output = System.IO.Path.Join(scratch.FullName, "blocks");
            string window = string.Create(CultureInfo.InvariantCulture,
                $"driver=raw,offset={offset},size={end - offset},file.driver=qcow2,"
                + $"file.file.filename={image.Replace(",", ",,", StringComparison.Ordinal)}");
            HostToolResult result = RunAsync(
                ["convert", "-U", "--image-opts", window, "-O", "raw", output], CancellationToken.None)
                .GetAwaiter().GetResult();
            if (result.ExitCode != 0)
            {
                throw new SandboxException("DiskImageInvalid", SandboxErrorKind.InvalidData,
                    $"qemu-img cannot read the disk in '{image}': {result.Error.Trim()}", image);
            }

            return File.ReadAllBytes(output);
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    /// <summary>
    /// Creates <paramref name="overlay"/>, a qcow2 image backed by <paramref name="original"/>:
    /// the guest reads through to the original and writes only into the overlay.
    /// </summary>
    public async Task CreateOverlayAsync(
        string original, string overlay, object target, CancellationToken cancellationToken)
    {
        HostToolResult result = await RunAsync(
            ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", original, overlay], cancellationToken)
            .ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw new SandboxException("RootDiskFailed", SandboxErrorKind.DeviceError,
                $"qemu-img could not create the sandbox's overlay on '{original}': {result.Error.Trim()}", target);
        }
    }

    private Task<HostToolResult> RunAsync(IEnumerable<string> arguments, CancellationToken cancellationToken) =>
        HostTool.RunAsync(Path, arguments, NotFound, cancellationToken);

    private static SandboxException NotFound(Exception? inner) => new(
        "QemuImgNotFound", SandboxErrorKind.NotInstalled,
        "qemu-img was not found beside QEMU or on PATH; it reads and overlays qcow2 disk images. " + InstallHint,
        "qemu-img", inner)
    {
        Hint = InstallHint,
    };
}
