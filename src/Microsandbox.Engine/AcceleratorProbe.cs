using System.Diagnostics;
using System.Text.Json;

namespace Microsandbox.Engine;

/// <summary>The accelerator a host can really use, and why.</summary>
/// <param name="Name">kvm or tcg.</param>
/// <param name="Reason">Why it was chosen, in words a user can act on.</param>
/// <param name="FromCache">Whether the answer came from an earlier probe.</param>
public sealed record AcceleratorChoice(string Name, string Reason, bool FromCache)
{
    /// <summary>Whether this is software emulation (slow, but always available).</summary>
    public bool IsEmulated => Name == "tcg";
}

/// <summary>
/// Decides between KVM and TCG by booting the real guest under KVM with a deadline. A /dev/kvm
/// that exists can still be unable to run a guest (nested, paravirtualised hosts hang at boot),
/// so presence proves nothing. The answer is cached per host kernel and QEMU version.
/// </summary>
public static class AcceleratorProbe
{
    private const string ReadyMarker = "msb-agent: ready";
    private static readonly TimeSpan ProbeDeadline = TimeSpan.FromSeconds(8);
    private static readonly SemaphoreSlim ProbeLock = new(1, 1);

    /// <summary>The accelerator to use, probing once if nothing is cached.</summary>
    public static async Task<AcceleratorChoice> ResolveAsync(
        SandboxHome home, Qemu qemu, GuestAssets assets, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(home);
        ArgumentNullException.ThrowIfNull(qemu);
        ArgumentNullException.ThrowIfNull(assets);
        string? forced = Environment.GetEnvironmentVariable("MSB_ACCEL");
        if (forced is "kvm" or "tcg")
        {
            return new AcceleratorChoice(forced, "chosen by MSB_ACCEL", false);
        }

        if (!OperatingSystem.IsLinux())
        {
            return new AcceleratorChoice("tcg", "only KVM is probed so far; other hosts emulate", false);
        }

        if (!File.Exists("/dev/kvm"))
        {
            return new AcceleratorChoice("tcg", "/dev/kvm does not exist (no hardware virtualisation)", false);
        }

        if (!CanOpenKvm())
        {
            return new AcceleratorChoice("tcg", "/dev/kvm exists but this user cannot open it (add the user to the kvm group)", false);
        }

        string key = $"{File.ReadAllText("/proc/sys/kernel/osrelease").Trim()}|qemu {qemu.Version}";
        string cachePath = Path.Join(home.CacheDirectory, "accelerator.json");
        await ProbeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (ReadCache(cachePath, key) is { } cached)
            {
                return cached with { FromCache = true };
            }

            AcceleratorChoice choice = await ProbeKvmAsync(qemu, assets, cancellationToken).ConfigureAwait(false);
            WriteCache(cachePath, key, choice);
            return choice;
        }
        finally
        {
            ProbeLock.Release();
        }
    }

    private static bool CanOpenKvm()
    {
        try
        {
            using var handle = File.OpenHandle("/dev/kvm", FileMode.Open, FileAccess.ReadWrite);
            return true;
        }
        catch (Exception ex) when (ex is UnauthorizedAccessException or IOException)
        {
            return false;
        }
    }

    private static async Task<AcceleratorChoice> ProbeKvmAsync(
        Qemu qemu, GuestAssets assets, CancellationToken cancellationToken)
    {
        string dir = Path.Join(Path.GetTempPath(), "msb-probe-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        string console = Path.Join(dir, "console.log");
        var info = new ProcessStartInfo(qemu.Path) { UseShellExecute = false, RedirectStandardError = true };
        foreach (string arg in Qemu.MicroVmArguments(new MicroVmConfig
        {
            Accelerator = "kvm",
            KernelPath = assets.KernelPath,
            InitramfsPath = assets.InitramfsPath,
            ConsoleLogPath = console,
            AgentSocketPath = Path.Join(dir, "agent.sock"),
            MemoryMB = 256,
        }))
        {
            info.ArgumentList.Add(arg);
        }

        using var process = Process.Start(info)!;
        Task<string> stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        var clock = Stopwatch.StartNew();
        try
        {
            while (clock.Elapsed < ProbeDeadline && !process.HasExited)
            {
                if (File.Exists(console) && (await File.ReadAllTextAsync(console, cancellationToken)
                    .ConfigureAwait(false)).Contains(ReadyMarker, StringComparison.Ordinal))
                {
                    return new AcceleratorChoice("kvm",
                        $"a KVM guest booted to its agent in {clock.Elapsed.TotalSeconds:0.0} s", false);
                }

                await Task.Delay(100, cancellationToken).ConfigureAwait(false);
            }

            if (process.HasExited)
            {
                string error = (await stderr.ConfigureAwait(false)).Trim();
                return new AcceleratorChoice("tcg", $"QEMU could not start a KVM guest: {error}", false);
            }

            return new AcceleratorChoice("tcg",
                $"/dev/kvm is present but a KVM guest did not boot within {ProbeDeadline.TotalSeconds:0} s " +
                "(nested or paravirtualised KVM); using TCG emulation, which is much slower", false);
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            }

            Directory.Delete(dir, recursive: true);
        }
    }

    private static AcceleratorChoice? ReadCache(string path, string key)
    {
        try
        {
            var entry = JsonSerializer.Deserialize<CacheEntry>(File.ReadAllText(path));
            return entry is not null && entry.Key == key ? new AcceleratorChoice(entry.Name, entry.Reason, true) : null;
        }
        catch (Exception ex) when (ex is IOException or JsonException)
        {
            return null;
        }
    }

    private static void WriteCache(string path, string key, AcceleratorChoice choice)
    {
        string temp = path + "." + Environment.ProcessId + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(new CacheEntry(key, choice.Name, choice.Reason)));
        File.Move(temp, path, overwrite: true);
    }

    private sealed record CacheEntry(string Key, string Name, string Reason);
}
