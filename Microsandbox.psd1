@{
    RootModule             = 'Microsandbox.psm1'
    ModuleVersion          = '0.1.0'
    GUID                   = '5d0f6c1e-7a51-4a4e-9b0e-3c7f2f4b8a61'
    Author                 = 'Microsandbox contributors'
    CompanyName            = 'Microsandbox contributors'
    Copyright              = '(c) Microsandbox contributors. MIT License.'
    Description            = 'Runs untrusted work in local microVMs: each sandbox is a real virtual machine with its own Linux kernel, filesystem and network stack.'
    PowerShellVersion      = '7.4'
    CompatiblePSEditions   = @('Core')
    NestedModules          = @('Microsandbox.PowerShell.dll')
    FormatsToProcess       = @('Microsandbox.format.ps1xml')
    FunctionsToExport      = @()
    CmdletsToExport        = @(
        'New-Sandbox', 'Get-Sandbox', 'Start-Sandbox', 'Stop-Sandbox', 'Remove-Sandbox',
        'Invoke-SandboxCommand', 'Test-SandboxHost', 'Get-SandboxImage', 'Save-SandboxImage',
        'Import-SandboxImage', 'Remove-SandboxImage', 'Enter-Sandbox', 'Send-SandboxSignal',
        'Copy-SandboxItem', 'Get-SandboxChildItem', 'Get-SandboxContent', 'Set-SandboxContent', 'New-SandboxItem',
        'Remove-SandboxItem', 'Test-SandboxPath', 'Restart-Sandbox', 'Wait-Sandbox', 'Get-SandboxLog'
    )
    VariablesToExport      = @()
    AliasesToExport        = @()
    PrivateData            = @{
        PSData = @{
            Tags         = @('sandbox', 'microvm', 'qemu', 'kvm', 'virtualization', 'security', 'Linux')
            LicenseUri   = 'https://opensource.org/licenses/MIT'
            ReleaseNotes = 'First release: sandboxes on QEMU microVMs with copy-on-write roots, from the built-in BusyBox image, OCI images pulled from a registry or imported offline from OCI layouts and docker save archives, host folders or qcow2 and raw disk images; commands with streamed, flow-controlled stdin and stdout, time limits and users; interactive shells on a terminal with Enter-Sandbox.'
        }
    }
}
