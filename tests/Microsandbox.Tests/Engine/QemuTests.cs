using System.Globalization;
using Microsandbox.Engine;

namespace Microsandbox.Tests.Engine;

public sealed class QemuArgumentTests
{
    private static MicroVmConfig Config(string accelerator, IReadOnlyList<string>? extra = null) => new()
    {
        Accelerator = accelerator,
        Cpus = 3,
        MemoryMB = 768,
        KernelPath = "/assets/vmlinuz",
        InitramfsPath = "/assets/initramfs.img",
        ConsoleLogPath = "/sb/dir with space/console.log",
        AgentSocketPath = "/sb/dir/agent.sock",
        ExtraKernelArguments = extra ?? [],
    };

    /// <summary>The value after the only occurrence of <paramref name="flag"/>.</summary>
    private static string ValueOf(IReadOnlyList<string> args, string flag)
    {
        int index = Assert.Single(Enumerable.Range(0, args.Count), i => args[i] == flag);
        Assert.True(index + 1 < args.Count, $"{flag} has no value");
        return args[index + 1];
    }

    /// <summary>The values after every occurrence of <paramref name="flag"/>.</summary>
    private static List<string> ValuesOf(IReadOnlyList<string> args, string flag) =>
        Enumerable.Range(0, args.Count - 1).Where(i => args[i] == flag).Select(i => args[i + 1]).ToList();

    private static string[] KernelArgs(IReadOnlyList<string> args) => ValueOf(args, "-append").Split(' ');

    /// <summary>The host TSC rate as the engine reads it, or null.</summary>
    private static long? HostKilohertz()
    {
        string? line = File.Exists("/proc/cpuinfo")
            ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("cpu MHz", StringComparison.Ordinal))
            : null;
        return line is not null && double.TryParse(line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim(),
            NumberStyles.Float, CultureInfo.InvariantCulture, out double mhz) && mhz > 0
            ? (long)Math.Round(mhz * 1000) : null;
    }

    [Fact]
    public void KVM_uses_the_host_cpu()
    {
        var args = Qemu.MicroVmArguments(Config("kvm"));

        Assert.Equal("kvm", ValueOf(args, "-accel"));
        Assert.Equal("host", ValueOf(args, "-cpu"));
    }

    [Fact]
    public void TCG_emulates_the_max_cpu()
    {
        var args = Qemu.MicroVmArguments(Config("tcg"));

        Assert.Equal("tcg", ValueOf(args, "-accel"));
        Assert.Equal("max", ValueOf(args, "-cpu"));
    }

    [Fact]
    public void An_unknown_accelerator_falls_back_to_TCG()
    {
        var args = Qemu.MicroVmArguments(Config("hvf"));

        Assert.Equal("tcg", ValueOf(args, "-accel"));
        Assert.Equal("max", ValueOf(args, "-cpu"));
    }

    [Theory]
    [InlineData("kvm")]
    [InlineData("tcg")]
    public void The_machine_is_a_microvm_with_the_RTC_on(string accelerator)
    {
        var args = Qemu.MicroVmArguments(Config(accelerator));
        string[] machine = ValueOf(args, "-M").Split(',');

        Assert.Equal("microvm", machine[0]);
        Assert.Contains("rtc=on", machine);
        Assert.DoesNotContain("rtc=off", machine);
        Assert.Contains("-no-reboot", args);
        Assert.Contains("-nodefaults", args);
        Assert.Equal("none", ValueOf(args, "-display"));
    }

    [Fact]
    public void Memory_and_cpus_come_from_the_config()
    {
        var args = Qemu.MicroVmArguments(Config("kvm"));

        Assert.Equal("768", ValueOf(args, "-m"));
        Assert.Equal("3", ValueOf(args, "-smp"));
        Assert.Equal("/assets/vmlinuz", ValueOf(args, "-kernel"));
        Assert.Equal("/assets/initramfs.img", ValueOf(args, "-initrd"));
    }

    [Fact]
    public void The_console_goes_to_the_given_file()
    {
        var args = Qemu.MicroVmArguments(Config("kvm"));

        Assert.Equal("file:/sb/dir with space/console.log", ValueOf(args, "-serial"));
        Assert.Contains("console=ttyS0", KernelArgs(args));
    }

    [Fact]
    public void The_agent_port_is_a_named_virtserialport_on_a_listening_socket()
    {
        var args = Qemu.MicroVmArguments(Config("kvm"));

        string[] chardev = ValueOf(args, "-chardev").Split(',');
        Assert.Equal("socket", chardev[0]);
        Assert.Contains("id=agent", chardev);
        Assert.Contains("path=/sb/dir/agent.sock", chardev);
        Assert.Contains("server=on", chardev);
        Assert.Contains("wait=off", chardev);

        List<string> devices = ValuesOf(args, "-device");
        int bus = devices.IndexOf("virtio-serial-device");
        Assert.True(bus >= 0, "no virtio-serial bus");
        string port = Assert.Single(devices, d => d.StartsWith("virtserialport", StringComparison.Ordinal));
        Assert.True(devices.IndexOf(port) > bus, "the port must come after its bus");
        string[] portOptions = port.Split(',');
        Assert.Contains("chardev=agent", portOptions);
        Assert.Contains("name=agent", portOptions);
    }

    [Fact]
    public void Extra_kernel_arguments_come_last_in_order()
    {
        var args = Qemu.MicroVmArguments(Config("tcg", ["msb.hostname=box-1", "msb.debug=1"]));
        string[] kernel = KernelArgs(args);

        Assert.Equal(["msb.hostname=box-1", "msb.debug=1"], kernel[^2..]);
        Assert.Equal("console=ttyS0", kernel[0]);
        Assert.DoesNotContain(KernelArgs(Qemu.MicroVmArguments(Config("tcg"))),
            a => a.StartsWith("msb.", StringComparison.Ordinal));
    }

    [Fact]
    public void TSC_rate_is_handed_over_only_under_TCG()
    {
        string[] kvm = KernelArgs(Qemu.MicroVmArguments(Config("kvm")));
        string[] tcg = KernelArgs(Qemu.MicroVmArguments(Config("tcg", ["msb.hostname=x"])));

        Assert.DoesNotContain(kvm, a => a.StartsWith("tsc_early_khz=", StringComparison.Ordinal));
        Assert.DoesNotContain(kvm, a => a.StartsWith("lpj=", StringComparison.Ordinal));
        if (HostKilohertz() is long khz)
        {
            Assert.Contains($"tsc_early_khz={khz}", tcg);
            Assert.Contains($"lpj={khz * 4}", tcg);
            Assert.Equal("msb.hostname=x", tcg[^1]);
        }
        else
        {
            Assert.DoesNotContain(tcg, a => a.StartsWith("tsc_early_khz=", StringComparison.Ordinal));
        }
    }

    [Fact]
    public void Each_disk_is_attached_in_its_own_format_by_serial()
    {
        var args = Qemu.MicroVmArguments(new MicroVmConfig
        {
            KernelPath = "/k",
            InitramfsPath = "/i",
            ConsoleLogPath = "/c",
            AgentSocketPath = "/a",
            Disks =
            [
                new VirtualDisk("/sb/root.qcow2", "msb-root", ReadOnly: false, "qcow2"),
                new VirtualDisk("/img/base.erofs", "msb-lower", ReadOnly: true),
            ],
        });
        List<string> drives = ValuesOf(args, "-drive");

        Assert.Equal("file=/sb/root.qcow2,if=none,id=disk0,format=qcow2,discard=unmap", drives[0]);
        Assert.Equal("file=/img/base.erofs,if=none,id=disk1,format=raw,readonly=on", drives[1]);
        Assert.Contains("virtio-blk-device,drive=disk0,serial=msb-root", ValuesOf(args, "-device"));
    }

    [Fact]
    public void A_null_config_is_refused() =>
        Assert.Throws<ArgumentNullException>(() => Qemu.MicroVmArguments(null!));
}

[Collection("Environment")]
public sealed class QemuDiscoveryTests : IDisposable
{
    private readonly TempHome _temp = new();
    private readonly EnvironmentScope _env = EnvironmentScope.Clean();

    public void Dispose()
    {
        _env.Dispose();
        _temp.Dispose();
    }

    [Fact]
    public void MSB_QEMU_names_the_binary_and_its_version_is_parsed()
    {
        string fake = _temp.WriteScript("qemu-system-x86_64",
            "echo 'QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u7)'; " +
            "echo 'Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers'");
        _env.Set("MSB_QEMU", fake);

        Qemu qemu = Assert.IsType<Qemu>(Qemu.Find());

        Assert.Equal(fake, qemu.Path);
        Assert.Equal("7.2.19", qemu.Version);
        Assert.Equal(fake, Qemu.Require().Path);
    }

    [Fact]
    public void An_unreadable_version_is_unknown()
    {
        _env.Set("MSB_QEMU", _temp.WriteScript("qemu-silent", "exit 0"));

        Assert.Equal("unknown", Qemu.Find()?.Version);
    }

    [Fact]
    public void MSB_QEMU_pointing_nowhere_is_not_found_even_with_QEMU_on_PATH()
    {
        _env.Set("MSB_QEMU", Path.Join(_temp.Scratch, "no-such-qemu"));

        Assert.Null(Qemu.Find());
        var ex = Assert.Throws<SandboxException>(Qemu.Require);
        Assert.Equal("QemuNotFound", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.NotInstalled, ex.Kind);
        Assert.Equal(Qemu.InstallHint, ex.Hint);
        Assert.False(string.IsNullOrEmpty(ex.Hint));
    }

    [Fact]
    public void MSB_QEMU_pointing_at_a_folder_is_not_found()
    {
        _env.Set("MSB_QEMU", _temp.Scratch);

        Assert.Null(Qemu.Find());
    }

    [Fact]
    public void Without_MSB_QEMU_the_binary_is_searched_on_PATH()
    {
        string bin = Path.Join(_temp.Scratch, "bin");
        Directory.CreateDirectory(bin);
        string fake = _temp.WriteScript("qemu-system-x86_64", "echo 'QEMU emulator version 9.1'");
        File.Move(fake, Path.Join(bin, "qemu-system-x86_64"));
        _env.Set("PATH", Path.Join(_temp.Scratch, "empty") + Path.PathSeparator + bin);

        Qemu qemu = Assert.IsType<Qemu>(Qemu.Find());

        Assert.Equal(Path.Join(bin, "qemu-system-x86_64"), qemu.Path);
        Assert.Equal("9.1", qemu.Version);
    }
}
