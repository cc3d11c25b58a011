using System.Collections;
using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Creates a sandbox and boots its microVM.</para>
/// <para type="description">Creates a sandbox, a virtual machine with its own Linux kernel, and waits until its agent is ready to run commands.</para>
/// </summary>
[Cmdlet(VerbsCommon.New, "Sandbox", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(Sandbox))]
public sealed class NewSandboxCommand : SandboxCmdlet
{
    /// <summary>
    /// <para type="description">The sandbox's unique name: not empty, at most 128 UTF-8 bytes. When omitted, a name is made from the image's name and six random hex digits, such as python-3fa81c.</para>
    /// </summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [AllowEmptyString]
    public string? Name { get; set; }

    /// <summary>
    /// <para type="description">The image of the root filesystem: an OCI image reference (python, 127.0.0.1:5000/app:1.0, name@sha256:...), a host folder or a qcow2 or raw disk image file (a path), or default, the built-in BusyBox image, which is also used when -Image is omitted.</para>
    /// </summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(SandboxImageCompleter))]
    public string? Image { get; set; }

    /// <summary>
    /// <para type="description">When to pull the image from its registry: IfMissing (default), Always or Never.</para>
    /// </summary>
    [Parameter]
    public PullPolicy PullPolicy { get; set; } = PullPolicy.IfMissing;

    /// <summary>
    /// <para type="description">Number of virtual CPUs (default 1).</para>
    /// </summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public int Cpus { get; set; } = 1;

    /// <summary>
    /// <para type="description">Guest memory in MiB (default 512).</para>
    /// </summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public int MemoryMB { get; set; } = 512;

    /// <summary>
    /// <para type="description">Environment variables every command in the sandbox gets.</para>
    /// </summary>
    [Parameter]
    public Hashtable? Environment { get; set; }

    /// <summary>
    /// <para type="description">Labels: a hashtable, key=value strings, or bare keys (stored with an empty value).</para>
    /// </summary>
    [Parameter]
    [LabelTransformation]
    public Hashtable? Label { get; set; }

    /// <summary>
    /// <para type="description">Default working directory of commands (default: the image's, else /).</para>
    /// </summary>
    [Parameter]
    public string? WorkingDirectory { get; set; }

    /// <summary>
    /// <para type="description">The user commands run as unless they name one: a name or uid from the image's /etc/passwd, optionally with :group. Default: the image config's User, else root.</para>
    /// </summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? User { get; set; }

    /// <summary>
    /// <para type="description">Shell that runs command strings (default /bin/sh).</para>
    /// </summary>
    [Parameter]
    public string Shell { get; set; } = "/bin/sh";

    /// <summary>
    /// <para type="description">Replace an existing sandbox of the same name: it is stopped gracefully, removed, and created anew.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter Replace { get; set; }

    /// <summary>
    /// <para type="description">Seconds the replaced sandbox may take to stop gracefully before it is killed; 0 kills at once (default 10).</para>
    /// </summary>
    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int ReplaceTimeout { get; set; } = 10;

    /// <summary>
    /// <para type="description">Seconds the guest may take to become ready (default 30 with KVM, 120 under emulation).</para>
    /// </summary>
    [Parameter]
    [ValidateRange(1, int.MaxValue)]
    public int BootTimeout { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        string image = string.IsNullOrEmpty(Image) ? SandboxOptions.DefaultImage : Image;
        string target = Name ?? $"(a new sandbox of {image})";
        if (!ShouldProcess(target, Replace ? "Create sandbox, replacing any sandbox of that name" : "Create sandbox"))
        {
            return;
        }

        var options = new SandboxOptions
        {
            Name = Name,
            Image = Image,
            Cpus = Cpus,
            MemoryMB = MemoryMB,
            WorkingDirectory = WorkingDirectory,
            Shell = Shell,
            User = User,
            Replace = Replace,
            ReplaceTimeout = TimeSpan.FromSeconds(ReplaceTimeout),
            BootTimeout = BootTimeout > 0 ? TimeSpan.FromSeconds(BootTimeout) : null,
            PullPolicy = PullPolicy,
        };
        foreach (var (key, value) in ToDictionary(Environment))
        {
            options.Environment[key] = value;
        }

        foreach (var (key, value) in ToDictionary(Label))
        {
            options.Labels[key] = value;
        }

        var view = new LayerProgressView(this, options.Image ?? SandboxOptions.DefaultImage);
        try
        {
            WriteObject(RunWithLayers((progress, layers, token) => Engine.CreateAsync(options, progress, layers, token),
                view.Update));
        }
        catch (SandboxException ex)
        {
            WriteSandboxError(ex);
        }
        finally
        {
            // A stopping pipeline refuses writes, and its host clears the bars itself.
            if (!Stopping)
            {
                view.Complete();
            }
        }
    }
}
