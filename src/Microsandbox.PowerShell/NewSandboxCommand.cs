using System.Collections;
using System.Globalization;
using System.Text;
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

    /// <summary>
    /// <para type="description">Seconds the sandbox may run, from the moment it is ready, before it is stopped gracefully. Kept for the sandbox's life: each start gets the same limit. Default: no limit.</para>
    /// </summary>
    [Parameter]
    [ValidateRange(1, int.MaxValue)]
    public int MaxDuration { get; set; }

    /// <summary>
    /// <para type="description">Seconds the sandbox may go with no command running, no file transfer and no client connected before it is stopped gracefully. Kept for the sandbox's life. Default: no limit.</para>
    /// </summary>
    [Parameter]
    [ValidateRange(1, int.MaxValue)]
    public int IdleTimeout { get; set; }

    /// <summary>
    /// <para type="description">Tie the sandbox to this pwsh process: when it exits or is killed, the sandbox is stopped gracefully. Without it a sandbox is detached and outlives the pwsh that made it. A later Start-Sandbox boots it detached.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter Attached { get; set; }

    /// <summary>
    /// <para type="description">Create the sandbox without booting it: it is recorded with its root and stays Created until Start-Sandbox boots it. Its scripts and patches are kept and put in place on that first start, before anything else runs in it. Cannot be combined with -Attached.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter NoStart { get; set; }

    /// <summary>
    /// <para type="description">Named scripts, as a hashtable of name to script text, written to /.msb/scripts/NAME (mode 0755) before the sandbox is returned; that folder is at the end of every command's PATH. A script without a #! line is given #!/bin/sh.</para>
    /// </summary>
    [Parameter]
    public Hashtable? Script { get; set; }

    /// <summary>
    /// <para type="description">Changes to the root, applied in order before the sandbox is returned. Each hashtable names one action with a guest path: Write (with Content, optional Mode), Append (with Content), Directory (optional Mode), Copy (a host path, with Destination) or Remove. Content is a string or bytes; Mode is permission bits as chmod writes them, such as '0600' or 755.</para>
    /// </summary>
    [Parameter]
    public Hashtable[]? Patch { get; set; }

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
            MaxDuration = MaxDuration > 0 ? TimeSpan.FromSeconds(MaxDuration) : null,
            IdleTimeout = IdleTimeout > 0 ? TimeSpan.FromSeconds(IdleTimeout) : null,
            AttachedProcessId = Attached ? System.Environment.ProcessId : null,
            NoStart = NoStart,
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

        try
        {
            foreach (DictionaryEntry entry in Script ?? [])
            {
                string script = entry.Key?.ToString() ?? "";
                options.Scripts[script] = entry.Value is null ? ""
                    : (string)LanguagePrimitives.ConvertTo(entry.Value, typeof(string), CultureInfo.InvariantCulture);
            }

            foreach (Hashtable table in Patch ?? [])
            {
                options.Patches.Add(ToPatch(table));
            }
        }
        catch (SandboxException ex)
        {
            WriteSandboxError(ex);
            return;
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

    private static readonly string[] PatchActions = ["Write", "Append", "Directory", "Copy", "Remove"];

    /// <summary>Turns one -Patch hashtable into a patch; anything unclear is <c>InvalidPatch</c>.</summary>
    private SandboxPatch ToPatch(Hashtable? table)
    {
        if (table is null)
        {
            throw new SandboxException("InvalidPatch", SandboxErrorKind.InvalidArgument, "A patch cannot be null.");
        }

        var keys = new Dictionary<string, object?>(StringComparer.OrdinalIgnoreCase);
        foreach (DictionaryEntry entry in table)
        {
            keys[entry.Key?.ToString() ?? ""] = entry.Value is PSObject wrapped ? wrapped.BaseObject : entry.Value;
        }

        string[] actions = [.. PatchActions.Where(keys.ContainsKey)];
        string[] allowed = [.. actions, "Content", "Mode", "Destination"];
        string? unknown = keys.Keys.FirstOrDefault(k => !allowed.Contains(k, StringComparer.OrdinalIgnoreCase));
        if (actions.Length != 1 || unknown is not null)
        {
            throw new SandboxException("InvalidPatch", SandboxErrorKind.InvalidArgument,
                unknown is not null && actions.Length == 1
                    ? $"A patch does not take the key '{unknown}'; it takes Content, Mode and Destination besides its action."
                    : "A patch names exactly one action: Write, Append, Directory, Copy or Remove.", table);
        }

        string action = actions[0];
        string path = keys[action]?.ToString() ?? "";
        int? mode = keys.TryGetValue("Mode", out object? m) && m is not null ? ParseMode(m, table) : null;
        byte[]? content = keys.TryGetValue("Content", out object? c) ? c switch
        {
            null => [],
            byte[] bytes => bytes,
            string text => Encoding.UTF8.GetBytes(text),
            _ => Encoding.UTF8.GetBytes((string)LanguagePrimitives.ConvertTo(c, typeof(string), CultureInfo.InvariantCulture)),
        } : null;
        bool wantsContent = action is "Write" or "Append";
        if (wantsContent != (content is not null) || (action == "Copy") != keys.ContainsKey("Destination")
            || (mode is not null && action is not ("Write" or "Directory")))
        {
            throw new SandboxException("InvalidPatch", SandboxErrorKind.InvalidArgument, action switch
            {
                "Write" or "Append" when content is null => $"The {action} patch of '{path}' needs Content.",
                "Copy" when !keys.ContainsKey("Destination") => $"The Copy patch of '{path}' needs a Destination in the sandbox.",
                _ when mode is not null && action is not ("Write" or "Directory") => $"Only Write and Directory patches take a Mode.",
                _ => $"The {action} patch of '{path}' takes neither Content nor Destination.",
            }, table);
        }

        SandboxPatch patch = action switch
        {
            "Write" => new SandboxPatch(SandboxPatchKind.WriteFile, path) { Content = content, Mode = mode },
            "Append" => new SandboxPatch(SandboxPatchKind.AppendFile, path) { Content = content },
            "Directory" => new SandboxPatch(SandboxPatchKind.MakeDirectory, path) { Mode = mode },
            "Copy" => new SandboxPatch(SandboxPatchKind.CopyFromHost, keys["Destination"]?.ToString() ?? "")
            {
                Source = path.Length == 0 ? path : GetUnresolvedProviderPathFromPSPath(path),
            },
            _ => new SandboxPatch(SandboxPatchKind.Remove, path),
        };
        patch.Validate(table);
        return patch;
    }

    private static int ParseMode(object value, Hashtable table)
    {
        try
        {
            // Written as chmod takes it: 644 and '0644' both mean rw-r--r--.
            string text = ((string)LanguagePrimitives.ConvertTo(value, typeof(string), CultureInfo.InvariantCulture)).Trim();
            return Convert.ToInt32(text.StartsWith("0o", StringComparison.OrdinalIgnoreCase) ? text[2..] : text, 8);
        }
        catch (Exception ex) when (ex is FormatException or OverflowException or ArgumentException or PSInvalidCastException)
        {
            throw new SandboxException("InvalidPatch", SandboxErrorKind.InvalidArgument,
                $"The patch Mode '{value}' is not permission bits; give an octal string such as '0644'.", table, ex);
        }
    }
}
