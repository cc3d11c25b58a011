namespace Microsandbox.Engine;

/// <summary>
/// The guest kernel and initramfs (agent, modules, default image) the module ships, and the
/// runtime executable beside them.
/// </summary>
public sealed class GuestAssets
{
    private GuestAssets(string directory, string runtimePath)
    {
        Directory = directory;
        RuntimePath = runtimePath;
    }

    /// <summary>The folder holding <c>vmlinuz</c> and <c>initramfs.img</c>.</summary>
    public string Directory { get; }

    /// <summary>
    /// The guest kernel: the uncompressed ELF where the build made one (QEMU boots it directly,
    /// sparing an emulated guest seconds of self-decompression), else the distribution's bzImage.
    /// </summary>
    public string KernelPath =>
        File.Exists(Path.Join(Directory, "vmlinux")) ? Path.Join(Directory, "vmlinux") : Path.Join(Directory, "vmlinuz");

    /// <summary>The initramfs: agent, kernel modules and the default image.</summary>
    public string InitramfsPath => Path.Join(Directory, "initramfs.img");

    /// <summary>The built-in default image as one layer tar.</summary>
    public string DefaultImageLayerPath => Path.Join(Directory, "rootfs.tar");

    /// <summary>The sandbox runtime executable.</summary>
    public string RuntimePath { get; }

    /// <summary>Whether kernel, initramfs and the default image layer are all present.</summary>
    public bool GuestPresent =>
        File.Exists(KernelPath) && File.Exists(InitramfsPath) && File.Exists(DefaultImageLayerPath);

    /// <summary>Whether the runtime executable is present.</summary>
    public bool RuntimePresent => File.Exists(RuntimePath);

    /// <summary>
    /// The assets beside this assembly (the module's layout), unless <c>MSB_GUEST_DIR</c> or
    /// <c>MSB_RUNTIME_PATH</c> point elsewhere.
    /// </summary>
    public static GuestAssets Locate()
    {
        string here = Path.GetDirectoryName(typeof(GuestAssets).Assembly.Location) ?? AppContext.BaseDirectory;
        string guest = Environment.GetEnvironmentVariable("MSB_GUEST_DIR") is { Length: > 0 } g
            ? g : Path.Join(here, "guest");
        string runtime = Environment.GetEnvironmentVariable("MSB_RUNTIME_PATH") is { Length: > 0 } r
            ? r : Path.Join(here, "msb-runtime");
        return new GuestAssets(Path.GetFullPath(guest), Path.GetFullPath(runtime));
    }

    /// <summary>Throws a <c>GuestAssetsMissing</c> or <c>RuntimeMissing</c> error unless all are present.</summary>
    public void EnsurePresent()
    {
        if (!GuestPresent)
        {
            throw new SandboxException("GuestAssetsMissing", SandboxErrorKind.NotInstalled,
                $"The guest kernel and initramfs are missing from '{Directory}'.", Directory)
            {
                Hint = "Reinstall the module, or build the assets with './build.ps1 Guest'.",
            };
        }

        if (!RuntimePresent)
        {
            throw new SandboxException("RuntimeMissing", SandboxErrorKind.NotInstalled,
                $"The sandbox runtime '{RuntimePath}' is missing.", RuntimePath)
            {
                Hint = "Reinstall the module, or build it with './build.ps1 Build'.",
            };
        }

        // A module installed from a .nupkg is unpacked from a zip, which keeps no execute bits.
        if (!OperatingSystem.IsWindows())
        {
            UnixFileMode mode = File.GetUnixFileMode(RuntimePath);
            if (!mode.HasFlag(UnixFileMode.UserExecute))
            {
                File.SetUnixFileMode(RuntimePath, mode | UnixFileMode.UserExecute);
            }
        }
    }
}
