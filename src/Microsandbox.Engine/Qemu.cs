using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Microsandbox.Engine;

/// <summary>The QEMU backend: finding the binary and composing a microvm command line.</summary>
public sealed partial class Qemu
{
    private Qemu(string path, string version)
    {
        Path = path;
        Version = version;
    }

    /// <summary>The qemu-system executable.</summary>
    public string Path { get; }

    /// <summary>Its version, as it reports it (for example 7.2.19).</summary>
    public string Version { get; }

    /// <summary>The install hint for hosts without QEMU.</summary>
    public static string InstallHint =>
        OperatingSystem.IsLinux()
            ? "Install QEMU: 'sudo apt-get install qemu-system-x86' (Debian/Ubuntu), " +
              "'sudo dnf install qemu-system-x86' (Fedora)."
            : OperatingSystem.IsMacOS() ? "Install QEMU: 'brew install qemu'." : "Install QEMU from qemu.org.";

    /// <summary>Finds QEMU (<c>MSB_QEMU</c>, else <c>PATH</c>); null when absent.</summary>
    public static Qemu? Find()
    {
        string binary = OperatingSystem.IsWindows() ? "qemu-system-x86_64.exe" : "qemu-system-x86_64";
        string? path = Environment.GetEnvironmentVariable("MSB_QEMU") is { Length: > 0 } configured
            ? (File.Exists(configured) ? configured : null)
            : (Environment.GetEnvironmentVariable("PATH") ?? "")
                .Split(System.IO.Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
                .Select(dir => System.IO.Path.Join(dir, binary))
                .FirstOrDefault(File.Exists);
        if (path is null)
        {
            return null;
        }

        var info = new ProcessStartInfo(path, "--version") { RedirectStandardOutput = true, UseShellExecute = false };
        try
        {
            using var process = Process.Start(info)!;
            Task<string> output = process.StandardOutput.ReadToEndAsync();
            if (!process.WaitForExit(10_000))
            {
                process.Kill();
                return null;
            }

            Match match = VersionPattern().Match(output.GetAwaiter().GetResult());
            return new Qemu(path, match.Success ? match.Groups[1].Value : "unknown");
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // Present but not executable: as good as absent, and the hint says what to do.
            return null;
        }
    }

    /// <summary>Finds QEMU or throws <c>QemuNotFound</c> with the install hint.</summary>
    public static Qemu Require() => Find() ?? throw new SandboxException(
        "QemuNotFound", SandboxErrorKind.NotInstalled,
        "QEMU (qemu-system-x86_64) was not found on PATH or at MSB_QEMU. " + InstallHint, "qemu-system-x86_64")
    {
        Hint = InstallHint,
    };

    /// <summary>
    /// Arguments for a microvm: direct kernel boot, virtio-mmio devices, the console to a file
    /// and the agent's virtio-serial port on a Unix socket.
    /// </summary>
    public static IReadOnlyList<string> MicroVmArguments(MicroVmConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        bool kvm = config.Accelerator == "kvm";
        var kernelArgs = new List<string>
        {
            "console=ttyS0", "reboot=t", "panic=-1", "quiet",
            // Under emulation every probe, self-test and mitigation the guest skips is boot
            // time saved; tsc=reliable keeps the second CPU from demoting the clock to jiffies.
            "tsc=reliable", "init_on_alloc=0", "cryptomgr.notests", "mitigations=off", "random.trust_cpu=on",
        };
        if (!kvm && HostTscKilohertz() is long khz)
        {
            // An emulated guest calibrates its TSC against the PIT in a short timed window; on a
            // busy host the vCPU is descheduled inside it, calibration fails, and with no HPET or
            // PM timer on microvm the boot hangs. TCG's TSC is the host's, so hand its rate over.
            // The delay loop count follows from it at Debian's HZ of 250.
            kernelArgs.Add($"tsc_early_khz={khz}");
            kernelArgs.Add($"lpj={khz * 4}");
        }

        kernelArgs.AddRange(config.ExtraKernelArguments);
        var disks = new List<string>();
        for (int i = 0; i < config.Disks.Count; i++)
        {
            // The agent finds each disk by its serial: virtio-mmio probe order names nothing.
            VirtualDisk disk = config.Disks[i];
            disks.Add("-drive");
            disks.Add($"file={disk.Path},if=none,id=disk{i},format={disk.Format}"
                + (disk.ReadOnly ? ",readonly=on" : ",discard=unmap"));
            disks.Add("-device");
            disks.Add($"virtio-blk-device,drive=disk{i},serial={disk.Serial}");
        }

        for (int i = 0; i < config.SharedFolders.Count; i++)
        {
            SharedFolder share = config.SharedFolders[i];
            disks.Add("-fsdev");
            disks.Add($"local,id=fs{i},path={share.Path},security_model=none" + (share.ReadOnly ? ",readonly=on" : ""));
            disks.Add("-device");
            disks.Add($"virtio-9p-device,fsdev=fs{i},mount_tag={share.Tag}");
        }

        return
        [
            "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on",
            "-accel", kvm ? "kvm" : "tcg",
            "-cpu", kvm ? "host" : "max",
            "-m", config.MemoryMB.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "-smp", config.Cpus.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", config.KernelPath,
            "-initrd", config.InitramfsPath,
            "-append", string.Join(' ', kernelArgs),
            "-serial", "file:" + config.ConsoleLogPath,
            "-device", "virtio-serial-device",
            "-chardev", $"socket,id=agent,path={config.AgentSocketPath},server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=agent",
            .. disks,
        ];
    }

    /// <summary>The host's TSC rate in kHz, from /proc/cpuinfo; null where it cannot be read.</summary>
    private static long? HostTscKilohertz()
    {
        // Known limit: "cpu MHz" is the current clock, which equals the TSC rate on the constant-TSC
        // hosts that matter (virtual machines, servers without scaling); elsewhere guest time drifts.
        try
        {
            string? line = File.ReadLines("/proc/cpuinfo")
                .FirstOrDefault(l => l.StartsWith("cpu MHz", StringComparison.Ordinal));
            string? value = line?[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
            return double.TryParse(value, System.Globalization.NumberStyles.Float,
                System.Globalization.CultureInfo.InvariantCulture, out double mhz) && mhz > 0
                ? (long)Math.Round(mhz * 1000) : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    [GeneratedRegex(@"version (\d+\.\d+(?:\.\d+)?)")]
    private static partial Regex VersionPattern();
}

/// <summary>What one microVM is made of.</summary>
public sealed class MicroVmConfig
{
    /// <summary>kvm or tcg.</summary>
    public string Accelerator { get; init; } = "tcg";

    /// <summary>Virtual CPUs.</summary>
    public int Cpus { get; init; } = 1;

    /// <summary>Memory in MiB.</summary>
    public int MemoryMB { get; init; } = 512;

    /// <summary>The guest kernel.</summary>
    public required string KernelPath { get; init; }

    /// <summary>The initramfs.</summary>
    public required string InitramfsPath { get; init; }

    /// <summary>Where the console goes.</summary>
    public required string ConsoleLogPath { get; init; }

    /// <summary>The Unix socket of the agent port.</summary>
    public required string AgentSocketPath { get; init; }

    /// <summary>More kernel arguments (read by the agent as <c>msb.*</c>).</summary>
    public IReadOnlyList<string> ExtraKernelArguments { get; init; } = [];

    /// <summary>Disk images attached as virtio-blk devices.</summary>
    public IReadOnlyList<VirtualDisk> Disks { get; init; } = [];

    /// <summary>Host folders shared over virtio-9p.</summary>
    public IReadOnlyList<SharedFolder> SharedFolders { get; init; } = [];
}

/// <summary>A host folder shared with a microVM over virtio-9p.</summary>
/// <param name="Path">The host folder.</param>
/// <param name="Tag">The mount tag the guest mounts it by.</param>
/// <param name="ReadOnly">Whether the guest may only read it.</param>
public sealed record SharedFolder(string Path, string Tag, bool ReadOnly);

/// <summary>A disk image attached to a microVM.</summary>
/// <param name="Path">The image file.</param>
/// <param name="Serial">The serial the guest sees, by which the agent finds the disk.</param>
/// <param name="ReadOnly">Whether the guest may only read it.</param>
/// <param name="Format">QEMU's name of the file's format: <c>raw</c> or <c>qcow2</c>.</param>
public sealed record VirtualDisk(string Path, string Serial, bool ReadOnly, string Format = "raw");
